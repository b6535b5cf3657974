package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/internal/quota"
	"github.com/pgtenant/pgtenant/internal/stmt"
	metastorage "schneider.vip/retryspool/storage/meta"
)

// DefaultMaxMetadataSize is the largest metadata of one message accepted
// by default (its ID, LastError, RetryPolicyName and headers together):
// 1 MiB.
const DefaultMaxMetadataSize = 1 << 20

// ErrInvalidMetadata reports metadata that cannot be stored as given (an
// unknown queue state); nothing was stored. Errors that wrap it wrap
// metastorage.ErrInvalidState too.
var ErrInvalidMetadata = fmt.Errorf("pgtenant: invalid metadata: %w", metastorage.ErrInvalidState)

// MetaStore keeps RetrySpool message metadata in the metadata table of a
// Target (see ddl.MetaTable): one statement, so one round trip, per
// operation. Every string is kept byte for byte and every integer exactly.
// It is safe for concurrent use.
type MetaStore struct {
	db      pg.DB
	mode    pgx.QueryExecMode
	maxSize int64
	base    values

	put, update, get, del, move, exists stmt.Stmt[values]
	firstPage, nextPage, counts, purge  stmt.Stmt[values]
	list                                map[string]stmt.Stmt[values] // by sort key and order
}

// NewMetaStore returns a MetaStore for t's metadata table over db; it
// refuses the metadata of one message over maxSize bytes (0:
// DefaultMaxMetadataSize) with ErrTooLarge.
func NewMetaStore(db pg.DB, t Target, mode pgx.QueryExecMode, maxSize int64) (*MetaStore, error) {
	mode, err := execMode(mode)
	if err != nil {
		return nil, err
	}
	if maxSize <= 0 {
		maxSize = DefaultMaxMetadataSize
	}
	m := &MetaStore{db: db, mode: mode, maxSize: maxSize, base: t.values(quota.Limits{}), list: map[string]stmt.Stmt[values]{}}
	c := &compiler{parts: t.parts()}
	m.put = c.compile(metaPutSQL)
	m.update = c.compile(metaUpdateSQL)
	m.get = c.compile(metaGetSQL)
	m.del = c.compile(metaDeleteSQL)
	m.move = c.compile(metaMoveSQL)
	m.exists = c.compile(metaExistsSQL)
	m.firstPage = c.compile(metaFirstPageSQL)
	m.nextPage = c.compile(metaNextPageSQL)
	m.counts = c.compile(metaCountsSQL)
	m.purge = c.compile(metaPurgeSQL)
	for name, col := range listSorts {
		for _, dir := range []string{"ASC", "DESC"} {
			m.list[name+dir] = c.compile(metaListSQL, "sort", col, "dir", dir)
		}
	}
	if c.err != nil {
		return nil, c.err
	}
	return m, nil
}

// call returns the values of a call on message id.
func (m *MetaStore) call(id string) *values {
	v := m.base
	v.messageID = id
	v.now = time.Now()
	return &v
}

// validState refuses states RetrySpool does not have: SMALLINT would
// wrap a large one onto another state.
func validState(s metastorage.QueueState) error {
	if s < metastorage.StateIncoming || s > metastorage.StateArchived {
		return fmt.Errorf("%w: queue state %d", ErrInvalidMetadata, int(s))
	}
	return nil
}

// setMeta fills v with md's columns, or refuses md: an unknown state
// (ErrInvalidMetadata), or more than maxSize bytes (ErrTooLarge). A nil
// headers map is stored as NULL, an empty one as an empty array; headers
// are key, value pairs sorted by key.
func (m *MetaStore) setMeta(v *values, md metastorage.MessageMetadata) error {
	if err := validState(md.State); err != nil {
		return err
	}
	size := int64(len(md.ID) + len(md.LastError) + len(md.RetryPolicyName))
	var headers [][]byte
	if md.Headers != nil {
		keys := make([]string, 0, len(md.Headers))
		for k, val := range md.Headers {
			keys = append(keys, k)
			size += int64(len(k) + len(val))
		}
		slices.Sort(keys)
		headers = make([][]byte, 0, 2*len(keys))
		for _, k := range keys {
			headers = append(headers, []byte(k), []byte(md.Headers[k]))
		}
	}
	if size > m.maxSize {
		return fmt.Errorf("%w: metadata of %d bytes, at most %d allowed", ErrTooLarge, size, m.maxSize)
	}
	v.metaID, v.lastError, v.retryPolicy = []byte(md.ID), []byte(md.LastError), []byte(md.RetryPolicyName)
	v.state, v.attempts, v.maxAttempts, v.priority = int16(md.State), int64(md.Attempts), int64(md.MaxAttempts), int64(md.Priority)
	v.nextRetry, v.size, v.headers = md.NextRetry, md.Size, headers
	v.created = md.Created
	if md.Created.IsZero() {
		v.created = v.now
	}
	return nil
}

// Cursor is where a page of an iteration ends: its last message's created
// time and message id.
type Cursor struct {
	Created time.Time
	ID      string
}

// scanMeta reads one row of metaCols and returns the metadata and its
// message id; md.ID is the metadata's own stored ID field.
func scanMeta(row pgx.Row) (md metastorage.MessageMetadata, messageID string, err error) {
	defer func() { err = pg.Classify(err) }() // pgx.ErrNoRows stays itself
	var (
		state                           int16
		attempts, maxAttempts, priority int64
		metaID, lastError, retryPolicy  []byte
		headers                         [][]byte
	)
	err = row.Scan(&messageID, &metaID, &state, &attempts, &maxAttempts, &md.NextRetry, &md.Created, &md.Updated,
		&lastError, &md.Size, &priority, &headers, &retryPolicy)
	if err != nil {
		return md, "", err
	}
	md.ID, md.LastError, md.RetryPolicyName = string(metaID), string(lastError), string(retryPolicy)
	md.State, md.Attempts, md.MaxAttempts, md.Priority = metastorage.QueueState(state), int(attempts), int(maxAttempts), int(priority)
	if headers != nil {
		md.Headers = make(map[string]string, len(headers)/2)
		for i := 0; i+1 < len(headers); i += 2 {
			md.Headers[string(headers[i])] = string(headers[i+1])
		}
	}
	return md, messageID, nil
}

func metaNotFound(id string) error {
	return fmt.Errorf("%w: %q", metastorage.ErrMessageNotFound, id)
}

// Store stores md under id, replacing what was there; updated becomes now,
// and created too when md has none.
func (m *MetaStore) Store(ctx context.Context, id string, md metastorage.MessageMetadata) error {
	return m.write(ctx, m.put, id, md, ErrGuardFailed)
}

// write runs a statement that writes md under id; when it writes no row
// it returns missing.
func (m *MetaStore) write(ctx context.Context, st stmt.Stmt[values], id string, md metastorage.MessageMetadata, missing error) error {
	if err := ValidateMessageID(id); err != nil {
		return err
	}
	v := m.call(id)
	if err := m.setMeta(v, md); err != nil {
		return err
	}
	return retry(ctx, writes, func() error {
		tag, err := m.db.Exec(ctx, st.SQL, st.Args(m.mode, v)...)
		if err != nil {
			return translate(err)
		}
		if tag.RowsAffected() == 0 {
			return missing
		}
		return nil
	})
}

// Get returns the metadata stored under id, or an error that errors.Is
// metastorage.ErrMessageNotFound.
func (m *MetaStore) Get(ctx context.Context, id string) (metastorage.MessageMetadata, error) {
	if err := ValidateMessageID(id); err != nil {
		return metastorage.MessageMetadata{}, err
	}
	var md metastorage.MessageMetadata
	err := retry(ctx, reads, func() error {
		var err error
		md, _, err = scanMeta(m.db.QueryRow(ctx, m.get.SQL, m.get.Args(m.mode, m.call(id))...))
		if errors.Is(err, pgx.ErrNoRows) {
			return metaNotFound(id)
		}
		return err
	})
	return md, err
}

// Update replaces the metadata stored under id, keeping its created time;
// updated becomes now. A missing message is metastorage.ErrMessageNotFound.
func (m *MetaStore) Update(ctx context.Context, id string, md metastorage.MessageMetadata) error {
	return m.write(ctx, m.update, id, md, metaNotFound(id))
}

// Delete removes the metadata stored under id and returns the state it was
// in. A missing message is metastorage.ErrMessageNotFound.
func (m *MetaStore) Delete(ctx context.Context, id string) (metastorage.QueueState, error) {
	if err := ValidateMessageID(id); err != nil {
		return 0, err
	}
	var state int16
	err := retry(ctx, writes, func() error {
		err := m.db.QueryRow(ctx, m.del.SQL, m.del.Args(m.mode, m.call(id))...).Scan(&state)
		if errors.Is(err, pgx.ErrNoRows) {
			return metaNotFound(id)
		}
		return translate(err)
	})
	return metastorage.QueueState(state), err
}

// Move moves the message id from state from to state to, if and only if
// it is in from when the statement runs (compare and swap): of concurrent
// moves from the same state exactly one wins, the others get
// metastorage.ErrStateConflict. A missing message is
// metastorage.ErrMessageNotFound; an unknown state ErrInvalidMetadata.
func (m *MetaStore) Move(ctx context.Context, id string, from, to metastorage.QueueState) error {
	if err := ValidateMessageID(id); err != nil {
		return err
	}
	if err := errors.Join(validState(from), validState(to)); err != nil {
		return err
	}
	v := m.call(id)
	v.fromState, v.toState = int16(from), int16(to)
	return retry(ctx, writes, func() error {
		tag, err := m.db.Exec(ctx, m.move.SQL, m.move.Args(m.mode, v)...)
		if err != nil {
			return translate(err)
		}
		if tag.RowsAffected() == 1 {
			return nil
		}
		var exists bool
		if err := m.db.QueryRow(ctx, m.exists.SQL, m.exists.Args(m.mode, v)...).Scan(&exists); err != nil {
			return translate(err)
		}
		if !exists {
			return metaNotFound(id)
		}
		return fmt.Errorf("%w: %q is not %s", metastorage.ErrStateConflict, id, from)
	})
}

// Page returns up to n messages in state, in (created, message id) order,
// after the cursor, or from the first when after is nil; each metadata's
// ID is its message id, as iterators return it. It returns the cursor of
// its last message. Paging by key, not by offset, skips nothing when
// messages leave the state between pages.
func (m *MetaStore) Page(ctx context.Context, state metastorage.QueueState, after *Cursor, n int) ([]metastorage.MessageMetadata, *Cursor, error) {
	var (
		out  []metastorage.MessageMetadata
		last *Cursor
	)
	v := m.call("")
	v.state, v.limit = int16(state), int64(n)
	st := m.firstPage
	if after != nil {
		st = m.nextPage
		v.afterCreated, v.afterID = after.Created, after.ID
	}
	err := retry(ctx, reads, func() error {
		rows, err := m.db.Query(ctx, st.SQL, st.Args(m.mode, v)...)
		if err != nil {
			return translate(err)
		}
		out, last = nil, nil
		defer rows.Close()
		for rows.Next() {
			md, id, err := scanMeta(rows)
			if err != nil {
				return err
			}
			last = &Cursor{Created: md.Created, ID: id}
			md.ID = id
			out = append(out, md)
		}
		return translate(rows.Err())
	})
	return out, last, err
}

// List returns the message ids in state that ListMessages selects: created
// or updated at or after since (when not zero), sorted by created, updated,
// priority or attempts (anything else sorts by created; message id breaks
// ties), descending when the order is "desc" in any case, else ascending;
// limit 0 means no limit. It also returns how many messages matched in
// all.
func (m *MetaStore) List(ctx context.Context, state metastorage.QueueState, o metastorage.MessageListOptions) ([]string, int, error) {
	sortBy := o.SortBy
	if _, ok := listSorts[sortBy]; !ok {
		sortBy = "created"
	}
	dir := "ASC"
	if strings.EqualFold(o.SortOrder, "desc") {
		dir = "DESC"
	}
	v := m.call("")
	v.state, v.offset = int16(state), int64(max(o.Offset, 0))
	if !o.Since.IsZero() {
		v.since = &o.Since
	}
	if o.Limit > 0 {
		l := int64(o.Limit)
		v.listLimit = &l
	}
	st := m.list[sortBy+dir]
	var (
		total int64
		ids   []string
	)
	err := retry(ctx, reads, func() error {
		return translate(m.db.QueryRow(ctx, st.SQL, st.Args(m.mode, v)...).Scan(&total, &ids))
	})
	if ids == nil {
		ids = []string{}
	}
	return ids, int(total), err
}

// Counts returns how many messages are in each state (states without
// messages are left out): one grouped index scan.
func (m *MetaStore) Counts(ctx context.Context) (map[metastorage.QueueState]int64, error) {
	counts := map[metastorage.QueueState]int64{}
	err := retry(ctx, reads, func() error {
		clear(counts)
		rows, err := m.db.Query(ctx, m.counts.SQL, m.counts.Args(m.mode, m.call(""))...)
		if err != nil {
			return translate(err)
		}
		var (
			state int16
			n     int64
		)
		_, err = pgx.ForEachRow(rows, []any{&state, &n}, func() error {
			counts[metastorage.QueueState(state)] = n
			return nil
		})
		return translate(err)
	})
	return counts, err
}

// Purge deletes the metadata not updated since before, in batches of
// PurgeBatch, and returns how many it deleted.
func (m *MetaStore) Purge(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	v := m.call("")
	v.before, v.limit = before, PurgeBatch
	for {
		tag, err := m.db.Exec(ctx, m.purge.SQL, m.purge.Args(m.mode, v)...)
		if err != nil {
			return total, translate(err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < PurgeBatch {
			return total, nil
		}
	}
}

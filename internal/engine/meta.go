package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/schema"
	metastorage "schneider.vip/retryspool/storage/meta"
)

// MetaStore keeps RetrySpool message metadata in the metadata table of a
// Target (see ddl.MetaTable): one statement, so one round trip, per
// operation. It is safe for concurrent use.
type MetaStore struct {
	db     pg.DB
	mode   pgx.QueryExecMode
	target Target

	storeSQL, getSQL, updateSQL, deleteSQL, moveSQL string
	firstPageSQL, nextPageSQL, countsSQL, purgeSQL  string
	listSQL                                         map[string]string // by sort key and order
}

// metaCols are the metadata columns, in the order scanMeta reads them.
const metaCols = "message_id, meta_id, state, attempts, max_attempts, next_retry, created, updated, last_error, size, priority, headers, retry_policy"

// listSorts are ListMessages' sort keys and the columns they sort by.
var listSorts = map[string]string{"created": "created", "updated": "updated", "priority": "priority", "attempts": "attempts"}

// NewMetaStore returns a MetaStore for t's metadata table over db. Other
// hosts learn of its writes through a Notifier, outside its statements.
func NewMetaStore(db pg.DB, t Target, mode pgx.QueryExecMode) (*MetaStore, error) {
	if mode == 0 {
		mode = pgx.QueryExecModeCacheStatement
	}
	if err := CheckExecMode(mode); err != nil {
		return nil, err
	}
	m := &MetaStore{db: db, mode: mode, target: t, listSQL: map[string]string{}}
	q := t.Table.Meta().Sanitize()
	sq := t.clauses()
	key, keyCols, part, conflict, where := sq.key, sq.keyCols, sq.part, sq.conflict, sq.where
	p, read, write := sq.p, sq.read, sq.write
	vals := key + fmt.Sprintf("$%d::VARCHAR", sq.k) + ", " + p(1) + "::pg_catalog.text, " + p(2) + "::SMALLINT, " + p(3) + "::INT, " +
		p(4) + "::INT, " + p(5) + "::pg_catalog.timestamptz, COALESCE(" + p(6) + "::pg_catalog.timestamptz, pg_catalog.now()), pg_catalog.now(), " +
		p(7) + "::pg_catalog.text, " + p(8) + "::BIGINT, " + p(9) + "::INT, " + p(10) + "::pg_catalog.jsonb, " + p(11) + "::pg_catalog.text"
	source := "VALUES (" + vals + ")"
	if t.Guard != nil {
		source = "SELECT " + vals + " WHERE true" + write(11)
	}
	// Values come from EXCLUDED (Citus refuses non-immutable functions in
	// DO UPDATE SET).
	m.storeSQL = "INSERT INTO " + q + " (" + keyCols + metaCols + ") " + source + " ON CONFLICT (" + conflict + ") DO UPDATE SET" +
		" meta_id = EXCLUDED.meta_id, state = EXCLUDED.state, attempts = EXCLUDED.attempts, max_attempts = EXCLUDED.max_attempts," +
		" next_retry = EXCLUDED.next_retry, created = EXCLUDED.created, updated = EXCLUDED.updated, last_error = EXCLUDED.last_error," +
		" size = EXCLUDED.size, priority = EXCLUDED.priority, headers = EXCLUDED.headers, retry_policy = EXCLUDED.retry_policy"
	// Update keeps created, as RetrySpool's filesystem backend does.
	m.updateSQL = "UPDATE " + q + " SET meta_id = " + p(1) + "::pg_catalog.text, state = " + p(2) + "::SMALLINT, attempts = " + p(3) + "::INT," +
		" max_attempts = " + p(4) + "::INT, next_retry = " + p(5) + "::pg_catalog.timestamptz, updated = pg_catalog.now()," +
		" last_error = " + p(6) + "::pg_catalog.text, size = " + p(7) + "::BIGINT, priority = " + p(8) + "::INT, headers = " + p(9) + "::pg_catalog.jsonb," +
		" retry_policy = " + p(10) + "::pg_catalog.text WHERE " + where + write(10)
	m.getSQL = "SELECT " + metaCols + " FROM " + q + " WHERE " + where + read(0)
	m.deleteSQL = "DELETE FROM " + q + " WHERE " + where + read(0) + " RETURNING state"
	// Compare and swap in one statement: the update when the message is in
	// the expected state, and whether the message exists at all.
	move := "UPDATE " + q + " SET state = " + p(2) + "::SMALLINT, updated = pg_catalog.now() WHERE " + where +
		" AND state" + eq + p(1) + "::SMALLINT" + write(2) + " RETURNING 1"
	m.moveSQL = "WITH u AS (" + move + ") SELECT (SELECT pg_catalog.count(*) FROM u), EXISTS (SELECT 1 FROM " +
		q + " WHERE " + where + read(2) + ")"
	// Statements on the whole table have no message id: their own
	// parameters start at $k.
	sq.k--
	m.firstPageSQL = "SELECT " + metaCols + " FROM " + q + " WHERE " + part + "state" + eq + p(1) + "::SMALLINT" + read(2) +
		" ORDER BY created, message_id LIMIT " + p(2)
	m.nextPageSQL = "SELECT " + metaCols + " FROM " + q + " WHERE " + part + "state" + eq + p(1) + "::SMALLINT" +
		" AND (created, message_id) OPERATOR(pg_catalog.>) (" + p(3) + "::pg_catalog.timestamptz, " + p(4) + "::VARCHAR)" + read(4) +
		" ORDER BY created, message_id LIMIT " + p(2)
	m.countsSQL = "SELECT state, pg_catalog.count(*) FROM " + q + " WHERE " + part + "true" + read(0) + " GROUP BY state"
	for name, col := range listSorts {
		for _, dir := range []string{"ASC", "DESC"} {
			m.listSQL[name+dir] = "WITH f AS (SELECT message_id, created, updated, priority, attempts FROM " + q + " WHERE " + part +
				"state" + eq + p(1) + "::SMALLINT AND (" + p(2) + "::pg_catalog.timestamptz IS NULL OR created OPERATOR(pg_catalog.>=) " + p(2) +
				" OR updated OPERATOR(pg_catalog.>=) " + p(2) + ")" + read(4) + ")" +
				" SELECT (SELECT pg_catalog.count(*) FROM f), ARRAY(SELECT message_id FROM f ORDER BY " + col + " " + dir +
				", message_id " + dir + " LIMIT " + p(3) + " OFFSET " + p(4) + ")"
		}
	}
	match := "m.message_id" + eq + "v.message_id"
	keyList := "message_id"
	if t.Partition != "" {
		match += " AND m." + schema.TenantColumn + eq + "v." + schema.TenantColumn
		keyList = schema.TenantColumn + ", message_id"
	}
	m.purgeSQL = "WITH v AS (DELETE FROM " + q + " m USING (SELECT " + keyList + " FROM " + q + " WHERE " + part +
		"updated OPERATOR(pg_catalog.<) " + p(1) + read(2) + " ORDER BY updated LIMIT " + p(2) + ") v WHERE " + match +
		" RETURNING m.message_id) SELECT pg_catalog.count(*) FROM v"
	return m, nil
}

// args returns the statement arguments: the exec mode, the partition value
// if any, then rest, then the guard's.
func (m *MetaStore) args(rest ...any) []any {
	a := make([]any, 0, 6+len(rest))
	a = append(a, m.mode)
	if m.target.Partition != "" {
		a = append(a, m.target.Partition)
	}
	a = append(a, rest...)
	if m.target.Guard != nil {
		a = append(a, m.target.Guard.Args...)
	}
	return a
}

// values are a metadata's column values for the store statement (with
// created) or the update statement (without), in their order after the
// message id. A nil headers map is stored as NULL, an empty one as {}.
func values(md metastorage.MessageMetadata, withCreated bool) ([]any, error) {
	var headers []byte
	if md.Headers != nil {
		var err error
		if headers, err = json.Marshal(md.Headers); err != nil {
			return nil, err
		}
	}
	vals := []any{md.ID, int16(md.State), int32(md.Attempts), int32(md.MaxAttempts), md.NextRetry}
	if withCreated {
		var created *time.Time
		if !md.Created.IsZero() {
			created = &md.Created
		}
		vals = append(vals, created)
	}
	return append(vals, md.LastError, md.Size, int32(md.Priority), headers, md.RetryPolicyName), nil
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
		state            int16
		attempts, maxAtt int32
		priority         int32
		headers          []byte
	)
	err = row.Scan(&messageID, &md.ID, &state, &attempts, &maxAtt, &md.NextRetry, &md.Created, &md.Updated,
		&md.LastError, &md.Size, &priority, &headers, &md.RetryPolicyName)
	if err != nil {
		return md, "", err
	}
	md.State, md.Attempts, md.MaxAttempts, md.Priority = metastorage.QueueState(state), int(attempts), int(maxAtt), int(priority)
	if headers != nil {
		if err := json.Unmarshal(headers, &md.Headers); err != nil {
			return md, "", err
		}
		if md.Headers == nil {
			md.Headers = map[string]string{}
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
	if err := ValidateMessageID(id); err != nil {
		return err
	}
	vals, err := values(md, true)
	if err != nil {
		return err
	}
	return retry(ctx, writes, func() error {
		tag, err := m.db.Exec(ctx, m.storeSQL, m.args(append([]any{id}, vals...)...)...)
		if err != nil {
			return translate(err)
		}
		if tag.RowsAffected() == 0 {
			return ErrGuardFailed
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
		md, _, err = scanMeta(m.db.QueryRow(ctx, m.getSQL, m.args(id)...))
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
	if err := ValidateMessageID(id); err != nil {
		return err
	}
	vals, err := values(md, false)
	if err != nil {
		return err
	}
	return retry(ctx, writes, func() error {
		tag, err := m.db.Exec(ctx, m.updateSQL, m.args(append([]any{id}, vals...)...)...)
		if err != nil {
			return translate(err)
		}
		if tag.RowsAffected() == 0 {
			return metaNotFound(id)
		}
		return nil
	})
}

// Delete removes the metadata stored under id and returns the state it was
// in. A missing message is metastorage.ErrMessageNotFound.
func (m *MetaStore) Delete(ctx context.Context, id string) (metastorage.QueueState, error) {
	if err := ValidateMessageID(id); err != nil {
		return 0, err
	}
	var state int16
	err := retry(ctx, writes, func() error {
		err := m.db.QueryRow(ctx, m.deleteSQL, m.args(id)...).Scan(&state)
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
// metastorage.ErrMessageNotFound.
func (m *MetaStore) Move(ctx context.Context, id string, from, to metastorage.QueueState) error {
	if err := ValidateMessageID(id); err != nil {
		return err
	}
	return retry(ctx, writes, func() error {
		var (
			moved  int64
			exists bool
		)
		if err := m.db.QueryRow(ctx, m.moveSQL, m.args(id, int16(from), int16(to))...).Scan(&moved, &exists); err != nil {
			return translate(err)
		}
		switch {
		case moved == 1:
			return nil
		case !exists:
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
	err := retry(ctx, reads, func() error {
		var (
			rows pgx.Rows
			err  error
		)
		if after == nil {
			rows, err = m.db.Query(ctx, m.firstPageSQL, m.args(int16(state), n)...)
		} else {
			rows, err = m.db.Query(ctx, m.nextPageSQL, m.args(int16(state), n, after.Created, after.ID)...)
		}
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
// ties), ascending or, with desc, descending; limit 0 means no limit. It
// also returns how many messages matched in all.
func (m *MetaStore) List(ctx context.Context, state metastorage.QueueState, o metastorage.MessageListOptions) ([]string, int, error) {
	sortBy := o.SortBy
	if _, ok := listSorts[sortBy]; !ok {
		sortBy = "created"
	}
	dir := "ASC"
	if o.SortOrder == "desc" {
		dir = "DESC"
	}
	var since *time.Time
	if !o.Since.IsZero() {
		since = &o.Since
	}
	var limit *int64
	if o.Limit > 0 {
		l := int64(o.Limit)
		limit = &l
	}
	var (
		total int64
		ids   []string
	)
	err := retry(ctx, reads, func() error {
		return translate(m.db.QueryRow(ctx, m.listSQL[sortBy+dir], m.args(int16(state), since, limit, int64(max(o.Offset, 0)))...).
			Scan(&total, &ids))
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
		rows, err := m.db.Query(ctx, m.countsSQL, m.args()...)
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
	for {
		var n int64
		if err := m.db.QueryRow(ctx, m.purgeSQL, m.args(before, PurgeBatch)...).Scan(&n); err != nil {
			return total, translate(err)
		}
		total += n
		if n < PurgeBatch {
			return total, nil
		}
	}
}

package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/schema"
	datastorage "schneider.vip/retryspool/storage/data"
)

// DB runs statements and transactions; *pgxpool.Pool, *pgxpool.Conn and
// *pgx.Conn satisfy it.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
}

// Defaults for Options.
const (
	// DefaultMaxMessageSize is the largest body accepted by default: 512 MiB.
	DefaultMaxMessageSize = 512 << 20
	// DefaultChunkSize is the size of the pieces large bodies are stored in,
	// and the largest body kept inline in the data column: 1 MiB.
	DefaultChunkSize = 1 << 20
)

// Options tune a Store.
type Options struct {
	// Mode is the pgx exec mode of every statement; the text modes are
	// refused with ErrTextMode. The zero value means
	// pgx.QueryExecModeCacheStatement.
	Mode pgx.QueryExecMode
	// MaxMessageSize is the largest body accepted; 0 means
	// DefaultMaxMessageSize.
	MaxMessageSize int64
	// ChunkSize is the piece size of large bodies and the inline limit; 0
	// means DefaultChunkSize.
	ChunkSize int
	// MaxBytes and MaxMessages, when positive, bound the target's total
	// body bytes and number of messages: a write that would exceed either
	// fails with ErrQuotaExceeded and stores nothing. The check reads the
	// target's committed usage (a scan of its sizes) before the write
	// commits; concurrent writes to one target can each pass it, so the
	// bound can be overshot by the writes in flight.
	MaxBytes, MaxMessages int64
}

// Target is the table a Store reads and writes.
type Target struct {
	// Table is the message table, with the layout of schema.CreateTableSQL.
	Table schema.Table
	// Partition, when not empty, confines the Store to the rows whose
	// schema.TenantColumn equals it, in a table created with shared=true.
	Partition string
	// Guard, when not nil, is a condition every write must meet; a write
	// that does not meet it stores nothing and returns ErrGuardFailed.
	Guard *Guard
}

// Guard is a write condition. SQL returns a boolean SQL expression whose
// parameters are numbered from first on, bound to Args in order. It must be
// built from validated, quoted identifiers only (see schema.ActiveGuard).
type Guard struct {
	SQL  func(first int) string
	Args []any
}

// Store moves message bodies in and out of one Target. It is safe for
// concurrent use; it holds no connection between calls.
type Store struct {
	db        DB
	mode      pgx.QueryExecMode
	target    Target
	maxSize   int64
	chunkSize int
	quota     bool
	maxBytes  int64
	maxMsgs   int64

	// Parameters: the partition value (if any) first, then the message id
	// ($k), then the statement's own.
	upsertSQL, getSQL, deleteSQL                   string
	chunkInsertSQL, chunkedUpsertSQL, chunkScanSQL string
	chunkCleanSQL, usageSQL                        string
}

// checkQuota fails with ErrQuotaExceeded if storing size bytes under id
// would take the target over its bounds (the message's current version does
// not count: it is being replaced).
func (s *Store) checkQuota(ctx context.Context, q DB, id string, size int64) error {
	if !s.quota {
		return nil
	}
	var msgs, bytes int64
	if err := q.QueryRow(ctx, s.usageSQL, s.args(id)...).Scan(&msgs, &bytes); err != nil {
		return translate(err)
	}
	if s.maxMsgs > 0 && msgs+1 > s.maxMsgs {
		return fmt.Errorf("%w: %d messages stored, at most %d allowed", ErrQuotaExceeded, msgs, s.maxMsgs)
	}
	if s.maxBytes > 0 && bytes+size > s.maxBytes {
		return fmt.Errorf("%w: %d + %d bytes, at most %d allowed", ErrQuotaExceeded, bytes, size, s.maxBytes)
	}
	return nil
}

// NewStore returns a Store for t over db.
func NewStore(db DB, t Target, o Options) (*Store, error) {
	if o.Mode == 0 {
		o.Mode = pgx.QueryExecModeCacheStatement
	}
	if err := checkExecMode(o.Mode); err != nil {
		return nil, err
	}
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = DefaultMaxMessageSize
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = DefaultChunkSize
	}
	s := &Store{db: db, mode: o.Mode, target: t, maxSize: o.MaxMessageSize, chunkSize: o.ChunkSize,
		quota: o.MaxBytes > 0 || o.MaxMessages > 0, maxBytes: o.MaxBytes, maxMsgs: o.MaxMessages}
	q, c := t.Table.Sanitize(), schema.ChunkTable(t.Table).Sanitize()
	// p(i) numbers the statement's own parameters after the key.
	key, keyCols, where, conflict, k := "", "", "message_id = $1", "message_id", 1
	if t.Partition != "" {
		key, keyCols, where, conflict, k = "$1::text, ", schema.TenantColumn+", ", schema.TenantColumn+" = $1 AND message_id = $2", schema.TenantColumn+", message_id", 2
	}
	p := func(i int) string { return fmt.Sprintf("$%d", k+i) }
	idv := fmt.Sprintf("$%d::varchar", k)
	upsert := func(vals string, nparams int) string {
		source := "VALUES (" + vals + ")"
		if t.Guard != nil {
			source = "SELECT " + vals + " WHERE " + t.Guard.SQL(k+nparams+1)
		}
		// The timestamp is computed in the VALUES list and taken from
		// EXCLUDED (Citus refuses non-immutable functions in DO UPDATE
		// SET); created is kept on update.
		return "INSERT INTO " + q + " (" + keyCols + "message_id, data, size, created, updated, chunked_version) " + source +
			" ON CONFLICT (" + conflict + ") DO UPDATE SET data = EXCLUDED.data, size = EXCLUDED.size," +
			" updated = EXCLUDED.updated, chunked_version = EXCLUDED.chunked_version"
	}
	// An inline write also removes the pieces of an earlier large version.
	s.upsertSQL = "WITH gone AS (DELETE FROM " + c + " WHERE " + where + ") " +
		upsert(key+idv+", "+p(1)+"::bytea, "+p(2)+"::bigint, NOW(), NOW(), NULL::bigint", 2)
	s.chunkedUpsertSQL = upsert(key+idv+", ''::bytea, "+p(1)+"::bigint, NOW(), NOW(), "+p(2)+"::bigint", 2)
	s.chunkInsertSQL = "INSERT INTO " + c + " (" + keyCols + "message_id, version, seq, data) VALUES (" +
		key + idv + ", " + p(1) + ", " + p(2) + ", " + p(3) + ")"
	s.chunkCleanSQL = "DELETE FROM " + c + " WHERE " + where + " AND version <> " + p(1)
	s.chunkScanSQL = "SELECT data FROM " + c + " WHERE " + where + " AND version = " + p(1) + " ORDER BY seq"
	s.getSQL = "SELECT data, size, chunked_version FROM " + q + " WHERE " + where
	part := ""
	if t.Partition != "" {
		part = schema.TenantColumn + " = $1 AND "
	}
	s.usageSQL = "SELECT count(*), coalesce(sum(size), 0)::bigint FROM " + q + " WHERE " + part + "message_id <> " + idv
	s.deleteSQL = "WITH gone AS (DELETE FROM " + c + " WHERE " + where + ") DELETE FROM " + q + " WHERE " + where
	return s, nil
}

// Target returns the Store's target.
func (s *Store) Target() Target { return s.target }

// args returns the statement arguments: the exec mode, the partition value
// if any, then rest.
func (s *Store) args(rest ...any) []any {
	a := make([]any, 0, 2+len(rest))
	a = append(a, s.mode)
	if s.target.Partition != "" {
		a = append(a, s.target.Partition)
	}
	return append(a, rest...)
}

// maxAttempts bounds the runs of one operation under the retry policy.
const maxAttempts = 3

// Effect says whether an operation changes data, which decides what the
// retry policy may repeat.
type effect bool

const (
	reads  effect = false
	writes effect = true
)

// retry runs op under pgtenant's retry policy (README, "Retries"):
//
//   - a request pgx reports as never sent (pgconn.SafeToRetry) is run
//     again, whatever it does, after a short pause;
//   - a stale cached plan (ErrStalePlan) is run again once: pgx has dropped
//     the statement, so the next run prepares it anew;
//   - a read that lost its connection (ErrConnection) is run again once: it
//     has no effect to repeat;
//   - a write or delete that reached the server is never run again: its
//     outcome is unknown and the caller gets ErrConnection, which says so.
//
// op must be one autocommit statement or a transaction it rolls back on
// failure, so a repeat cannot double a partial effect. It runs at most
// maxAttempts times and never after ctx has ended.
func retry(ctx context.Context, e effect, op func() error) error {
	stale, lost := false, false
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil || attempt == maxAttempts || ctx.Err() != nil {
			return err
		}
		switch {
		case pgconn.SafeToRetry(err):
		case errors.Is(err, ErrStalePlan) && !stale:
			stale = true
			continue // no pause: the next run succeeds at once
		case e == reads && errors.Is(err, ErrConnection) && !lost:
			lost = true
		default:
			return err
		}
		t := time.NewTimer(time.Duration(attempt*attempt) * 10 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// Put stores data under id, replacing any earlier version atomically. A nil
// data stores an empty body. On error nothing is changed, except when the
// connection failed after the server received the statement (ErrConnection):
// then either the old or the new version is stored, complete.
func (s *Store) Put(ctx context.Context, id string, data []byte) error {
	if err := ValidateMessageID(id); err != nil {
		return err
	}
	if int64(len(data)) > s.maxSize {
		return tooLarge(s.maxSize)
	}
	if data == nil {
		data = []byte{} // nil would be NULL
	}
	args := s.args(id, data, int64(len(data)))
	if s.target.Guard != nil {
		args = append(args, s.target.Guard.Args...)
	}
	return retry(ctx, writes, func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.checkQuota(ctx, s.db, id, int64(len(data))); err != nil {
			return err
		}
		tag, err := s.db.Exec(ctx, s.upsertSQL, args...)
		if err != nil {
			return translate(err)
		}
		if tag.RowsAffected() == 0 {
			return ErrGuardFailed
		}
		return nil
	})
}

// Get returns the body stored under id, or an error that errors.Is
// datastorage.ErrDataNotFound. It holds the whole body in memory; Reader
// streams.
func (s *Store) Get(ctx context.Context, id string) ([]byte, error) {
	r, err := s.Reader(ctx, id)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// Delete removes the body stored under id, or returns an error that
// errors.Is datastorage.ErrDataNotFound if there is none.
func (s *Store) Delete(ctx context.Context, id string) error {
	if err := ValidateMessageID(id); err != nil {
		return err
	}
	return retry(ctx, writes, func() error {
		tag, err := s.db.Exec(ctx, s.deleteSQL, s.args(id)...)
		if err != nil {
			return translate(err)
		}
		if tag.RowsAffected() == 0 {
			return errNotFound(id)
		}
		return nil
	})
}

// StoreFrom streams the body from r into id and returns the number of bytes
// stored; see StreamWriter.
func (s *Store) StoreFrom(ctx context.Context, id string, r io.Reader) (int64, error) {
	w, err := s.Writer(ctx, id)
	if err != nil {
		return 0, err
	}
	return w.StoreFrom(r)
}

// Writer returns a streaming writer for id; see StreamWriter.
func (s *Store) Writer(ctx context.Context, id string) (*StreamWriter, error) {
	if err := ValidateMessageID(id); err != nil {
		return nil, err
	}
	return NewStreamWriter(ctx, id, func(bool) (*Store, error) { return s, nil }), nil
}

func errNotFound(id string) error {
	return fmt.Errorf("%w: %q", datastorage.ErrDataNotFound, id)
}

// BytesReader is an io.ReadCloser over a body in memory; Read after Close
// returns ErrClosed, and Close is idempotent.
type BytesReader struct {
	r      *bytes.Reader
	closed bool
}

// NewBytesReader returns a BytesReader over data.
func NewBytesReader(data []byte) *BytesReader { return &BytesReader{r: bytes.NewReader(data)} }

// Read reads from the body.
func (r *BytesReader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, ErrClosed
	}
	return r.r.Read(p)
}

// Close releases the body.
func (r *BytesReader) Close() error {
	r.closed = true
	return nil
}

// Stats describes the messages of one Store.
type Stats struct {
	// Messages is the number of messages.
	Messages int64
	// Bytes is the sum of their sizes.
	Bytes int64
	// Oldest and Newest are the earliest and latest creation times; zero
	// when there are no messages.
	Oldest, Newest time.Time
}

// Stats counts the Store's messages exactly (a scan of its rows; in a shared
// table, of its partition's rows via the primary key).
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	var (
		st             Stats
		oldest, newest *time.Time
	)
	where := ""
	if s.target.Partition != "" {
		where = " WHERE " + schema.TenantColumn + " = $1"
	}
	err := s.db.QueryRow(ctx, "SELECT count(*), coalesce(sum(size), 0)::bigint, min(created), max(created) FROM "+
		s.target.Table.Sanitize()+where, s.args()...).Scan(&st.Messages, &st.Bytes, &oldest, &newest)
	if err != nil {
		return Stats{}, translate(err)
	}
	if oldest != nil {
		st.Oldest, st.Newest = *oldest, *newest
	}
	return st, nil
}

// PurgeBatch is the number of messages Purge deletes per statement.
const PurgeBatch = 1000

// Purge deletes the messages not updated since before, with their pieces,
// in batches of PurgeBatch (each its own statement, using the index on
// updated), and returns how many it deleted. It stops early, returning the
// count so far, when ctx ends.
func (s *Store) Purge(ctx context.Context, before time.Time) (int64, error) {
	q, c := s.target.Table.Sanitize(), schema.ChunkTable(s.target.Table).Sanitize()
	key, match, next := "message_id", "c.message_id = v.message_id", 1
	if s.target.Partition != "" {
		key = schema.TenantColumn + ", message_id"
		match = "c." + schema.TenantColumn + " = v." + schema.TenantColumn + " AND " + match
		next = 2
	}
	filter := fmt.Sprintf("updated < $%d", next)
	if s.target.Partition != "" {
		filter = schema.TenantColumn + " = $1 AND " + filter
	}
	sql := "WITH v AS (DELETE FROM " + q + " WHERE (" + key + ") IN (SELECT " + key + " FROM " + q +
		" WHERE " + filter + fmt.Sprintf(" ORDER BY updated LIMIT $%d) RETURNING ", next+1) + key + "), " +
		"gone AS (DELETE FROM " + c + " c USING v WHERE " + match + ") SELECT count(*) FROM v"
	var total int64
	for {
		var n int64
		if err := s.db.QueryRow(ctx, sql, s.args(before, PurgeBatch)...).Scan(&n); err != nil {
			return total, translate(err)
		}
		total += n
		if n < PurgeBatch {
			return total, nil
		}
	}
}

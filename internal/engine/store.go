package engine

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/schema"
	datastorage "schneider.vip/retryspool/storage/data"
)

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
	// Table is the message table, with the layout of ddl.Table.
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
// built from validated, quoted identifiers only.
type Guard struct {
	SQL  func(first int) string
	Args []any
}

// Store moves message bodies in and out of one Target. It is safe for
// concurrent use; it holds no connection between calls.
type Store struct {
	db        pg.DB
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
	chunkCleanSQL, usageSQL, probeSQL              string
	statsSQL, purgeSQL                             string
}

// eq is the equality operator, qualified.
const eq = " OPERATOR(pg_catalog.=) "

// NewStore returns a Store for t over db.
func NewStore(db pg.DB, t Target, o Options) (*Store, error) {
	if o.Mode == 0 {
		o.Mode = pgx.QueryExecModeCacheStatement
	}
	if err := CheckExecMode(o.Mode); err != nil {
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
	q, c := t.Table.Sanitize(), t.Table.Chunks().Sanitize()
	// p(i) numbers the statement's own parameters after the key.
	key, keyCols, part, conflict, k := "", "", "", "message_id", 1
	if t.Partition != "" {
		key, keyCols, conflict, k = "$1::pg_catalog.text, ", schema.TenantColumn+", ", schema.TenantColumn+", message_id", 2
		part = schema.TenantColumn + eq + "$1 AND "
	}
	where := part + "message_id" + eq + fmt.Sprintf("$%d", k)
	p := func(i int) string { return fmt.Sprintf("$%d", k+i) }
	idv := fmt.Sprintf("$%d::VARCHAR", k)
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
		upsert(key+idv+", "+p(1)+"::pg_catalog.bytea, "+p(2)+"::BIGINT, pg_catalog.now(), pg_catalog.now(), NULL::BIGINT", 2)
	s.chunkedUpsertSQL = upsert(key+idv+", ''::pg_catalog.bytea, "+p(1)+"::BIGINT, pg_catalog.now(), pg_catalog.now(), "+p(2)+"::BIGINT", 2)
	s.chunkInsertSQL = "INSERT INTO " + c + " (" + keyCols + "message_id, version, seq, data) VALUES (" +
		key + idv + ", " + p(1) + ", " + p(2) + ", " + p(3) + ")"
	s.chunkCleanSQL = "DELETE FROM " + c + " WHERE " + where + " AND version OPERATOR(pg_catalog.<>) " + p(1)
	// The probe finds a missing chunk table and locks nothing. Every write
	// locks the message row before the chunk rows (an inline upsert's CTE
	// runs after its INSERT), so writers of one message never deadlock.
	s.probeSQL = "SELECT FROM " + c + " LIMIT 0"
	s.chunkScanSQL = "SELECT data FROM " + c + " WHERE " + where + " AND version" + eq + p(1) + " ORDER BY seq"
	s.getSQL = "SELECT data, size, chunked_version FROM " + q + " WHERE " + where
	s.usageSQL = "SELECT pg_catalog.count(*), COALESCE(pg_catalog.sum(size), 0)::BIGINT FROM " + q +
		" WHERE " + part + "message_id OPERATOR(pg_catalog.<>) " + idv
	s.deleteSQL = "WITH gone AS (DELETE FROM " + c + " WHERE " + where + ") DELETE FROM " + q + " WHERE " + where
	partOnly := ""
	if t.Partition != "" {
		partOnly = " WHERE " + schema.TenantColumn + eq + "$1"
	}
	s.statsSQL = "SELECT pg_catalog.count(*), COALESCE(pg_catalog.sum(size), 0)::BIGINT, pg_catalog.min(created), pg_catalog.max(created) FROM " +
		q + partOnly
	// Purge: the oldest batch by the updated index, then their pieces.
	match := "m.message_id" + eq + "v.message_id"
	cmatch := "c.message_id" + eq + "v.message_id"
	keyList, returned := "message_id", "m.message_id"
	if t.Partition != "" {
		match += " AND m." + schema.TenantColumn + eq + "v." + schema.TenantColumn
		cmatch += " AND c." + schema.TenantColumn + eq + "v." + schema.TenantColumn
		keyList = schema.TenantColumn + ", message_id"
		returned += ", m." + schema.TenantColumn
	}
	s.purgeSQL = "WITH v AS (DELETE FROM " + q + " m USING (SELECT " + keyList + " FROM " + q + " WHERE " + part +
		"updated OPERATOR(pg_catalog.<) " + p(0) + " ORDER BY updated LIMIT " + p(1) + ") v WHERE " + match +
		" RETURNING " + returned + "), " +
		"gone AS (DELETE FROM " + c + " c USING v WHERE " + cmatch + ") SELECT pg_catalog.count(*) FROM v"
	return s, nil
}

// Statements returns the SQL text of the Store's inline upsert, its read of
// a message row and its delete, for benchmarks that run them without the
// Store. Their parameters: the partition value (if any), the message id,
// then the body and its size (upsert), then the guard's.
func (s *Store) Statements() (upsert, get, del string) { return s.upsertSQL, s.getSQL, s.deleteSQL }

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

// checkQuota fails with ErrQuotaExceeded if storing size bytes under id
// would take the target over its bounds (the message's current version does
// not count: it is being replaced).
func (s *Store) checkQuota(ctx context.Context, q pg.DB, id string, size int64) error {
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

// Put stores data under id, replacing any earlier version atomically. A nil
// data stores an empty body. On error nothing is changed, except when the
// connection failed after the server received the statement
// (pg.ErrConnection): then either the old or the new version is stored,
// complete.
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
	err := s.db.QueryRow(ctx, s.statsSQL, s.args()...).Scan(&st.Messages, &st.Bytes, &oldest, &newest)
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
	var total int64
	for {
		var n int64
		if err := s.db.QueryRow(ctx, s.purgeSQL, s.args(before, PurgeBatch)...).Scan(&n); err != nil {
			return total, translate(err)
		}
		total += n
		if n < PurgeBatch {
			return total, nil
		}
	}
}

package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
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
	// fails with ErrQuotaExceeded and stores nothing. They need the
	// Target's Account, which keeps the usage exact across hosts.
	MaxBytes, MaxMessages int64
}

// Target is the table a Store reads and writes.
type Target struct {
	// Table is the message table, with the layout of ddl.Table.
	Table schema.Table
	// Partition, when not empty, confines the Store to the rows whose
	// schema.TenantColumn equals it, in a table created with shared=true.
	Partition string
	// Guard, when not nil, is a condition every statement carries: a write
	// that does not meet it stores nothing and returns ErrGuardFailed, and
	// a read or delete finds nothing.
	Guard *Guard
	// Account, when not nil, keeps the target's usage in a row of its own,
	// which every write locks when quotas are set (Options.MaxBytes,
	// Options.MaxMessages).
	Account *Account
}

// Guard is a condition on the target's owner. Read and Write return a
// boolean SQL expression whose parameters are numbered from first on, bound
// to Args in order; Write's may lock what it reads until the write
// commits. Both must be built from validated, quoted identifiers only.
type Guard struct {
	Read, Write func(first int) string
	Args        []any
}

// Account names the statements on the row that keeps a target's usage.
// Their parameters are Args, then their own.
type Account struct {
	// LockSQL returns the usage (bytes, messages; NULLs when not counted
	// yet) and locks it until the transaction ends; no row when the owner
	// refuses writes.
	LockSQL string
	// SetSQL sets the usage to the bytes and messages that follow Args.
	SetSQL string
	// AddSQL adds the bytes and messages that follow Args to a counted
	// usage.
	AddSQL string
	Args   []any
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
	// ($k), then the statement's own, then the guard's.
	upsertSQL, getSQL, deleteSQL                   string
	chunkInsertSQL, chunkedUpsertSQL, chunkScanSQL string
	chunkCleanSQL, probeSQL                        string
	statsSQL, purgeSQL                             string
	sizeSQL, countSQL                              string
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
	quota := o.MaxBytes > 0 || o.MaxMessages > 0
	if quota && t.Account == nil {
		return nil, errors.New("pgtenant: quotas need a usage account")
	}
	s := &Store{db: db, mode: o.Mode, target: t, maxSize: o.MaxMessageSize, chunkSize: o.ChunkSize,
		quota: quota, maxBytes: o.MaxBytes, maxMsgs: o.MaxMessages}
	q, c := t.Table.Sanitize(), t.Table.Chunks().Sanitize()
	sq := t.clauses()
	key, keyCols, part, conflict, where := sq.key, sq.keyCols, sq.part, sq.conflict, sq.where
	p, read, write := sq.p, sq.read, sq.write
	idv := fmt.Sprintf("$%d::VARCHAR", sq.k)
	upsert := func(vals string, n int) string {
		source := "VALUES (" + vals + ")"
		if t.Guard != nil {
			source = "SELECT " + vals + " WHERE true" + write(n)
		}
		// The timestamp is computed in the VALUES list and taken from
		// EXCLUDED (Citus refuses non-immutable functions in DO UPDATE
		// SET); created is kept on update.
		return "INSERT INTO " + q + " (" + keyCols + "message_id, data, size, created, updated, chunked_version) " + source +
			" ON CONFLICT (" + conflict + ") DO UPDATE SET data = EXCLUDED.data, size = EXCLUDED.size," +
			" updated = EXCLUDED.updated, chunked_version = EXCLUDED.chunked_version"
	}
	// An inline write also removes the pieces of an earlier large version
	// (the CTE runs after the INSERT, so the message row is locked first).
	// The CTE itself carries no guard: when the guard refuses the INSERT,
	// the tenant is tombstoned and its pieces are going anyway.
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
	s.getSQL = "SELECT data, size, chunked_version FROM " + q + " WHERE " + where + read(0)
	s.sizeSQL = "SELECT size FROM " + q + " WHERE " + where
	s.deleteSQL = "WITH gone AS (DELETE FROM " + c + " WHERE " + where + ") DELETE FROM " + q + " WHERE " + where + read(0) +
		" RETURNING size"
	partOnly := "true"
	if t.Partition != "" {
		partOnly = schema.TenantColumn + eq + "$1"
	}
	// Statements on the whole target have no message id: their own
	// parameters start at $k.
	sq.k--
	s.countSQL = "SELECT pg_catalog.count(*), COALESCE(pg_catalog.sum(size), 0)::BIGINT FROM " + q + " WHERE " + partOnly
	s.statsSQL = "SELECT pg_catalog.count(*), COALESCE(pg_catalog.sum(size), 0)::BIGINT, pg_catalog.min(created), pg_catalog.max(created) FROM " +
		q + " WHERE " + partOnly + read(0)
	// Purge: the oldest batch by the updated index, then their pieces.
	match := "m.message_id" + eq + "v.message_id"
	cmatch := "c.message_id" + eq + "v.message_id"
	keyList, returned := "message_id", "m.message_id, m.size"
	if t.Partition != "" {
		match += " AND m." + schema.TenantColumn + eq + "v." + schema.TenantColumn
		cmatch += " AND c." + schema.TenantColumn + eq + "v." + schema.TenantColumn
		keyList = schema.TenantColumn + ", message_id"
		returned += ", m." + schema.TenantColumn
	}
	s.purgeSQL = "WITH v AS (DELETE FROM " + q + " m USING (SELECT " + keyList + " FROM " + q + " WHERE " + part +
		"updated OPERATOR(pg_catalog.<) " + p(1) + read(2) + " ORDER BY updated LIMIT " + p(2) + ") v WHERE " + match +
		" RETURNING " + returned + "), " +
		"gone AS (DELETE FROM " + c + " c USING v WHERE " + cmatch + ") SELECT pg_catalog.count(*), COALESCE(pg_catalog.sum(v.size), 0)::BIGINT FROM v"
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
	a := make([]any, 0, 4+len(rest))
	a = append(a, s.mode)
	if s.target.Partition != "" {
		a = append(a, s.target.Partition)
	}
	return append(a, rest...)
}

// guarded returns args(rest...) followed by the guard's arguments.
func (s *Store) guarded(rest ...any) []any {
	a := s.args(rest...)
	if s.target.Guard != nil {
		a = append(a, s.target.Guard.Args...)
	}
	return a
}

// reserve locks the target's usage row in tx and records the write of
// size bytes under id in it, or fails with ErrQuotaExceeded when that
// would take the target over its bounds (the message's current version
// does not count: it is being replaced). A usage not counted yet is
// counted first, once. Every quota write of the target holds the lock
// until it commits, on every host: the bounds are exact. No usage row
// means the owner refuses writes: ErrGuardFailed.
func (s *Store) reserve(ctx context.Context, tx pgx.Tx, id string, size int64) error {
	a := s.target.Account
	var bytes, msgs *int64
	if err := tx.QueryRow(ctx, a.LockSQL, a.Args...).Scan(&bytes, &msgs); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrGuardFailed
		}
		return translate(err)
	}
	var old *int64
	if err := tx.QueryRow(ctx, s.sizeSQL, s.args(id)...).Scan(&old); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return translate(err)
	}
	if bytes == nil || msgs == nil {
		var b, m int64
		if err := tx.QueryRow(ctx, s.countSQL, s.args()...).Scan(&m, &b); err != nil {
			return translate(err)
		}
		bytes, msgs = &b, &m
	}
	newBytes, newMsgs := *bytes+size, *msgs+1
	if old != nil {
		newBytes, newMsgs = newBytes-*old, *msgs
	}
	if s.maxMsgs > 0 && newMsgs > s.maxMsgs {
		return fmt.Errorf("%w: %d messages stored, at most %d allowed", ErrQuotaExceeded, *msgs, s.maxMsgs)
	}
	if s.maxBytes > 0 && newBytes > s.maxBytes {
		return fmt.Errorf("%w: %d bytes would be stored, at most %d allowed", ErrQuotaExceeded, newBytes, s.maxBytes)
	}
	_, err := tx.Exec(ctx, a.SetSQL, append(slices.Clone(a.Args), newBytes, newMsgs)...)
	return translate(err)
}

// release records in tx that n messages of bytes in all left the target.
func (s *Store) release(ctx context.Context, tx pgx.Tx, n, bytes int64) error {
	if n == 0 {
		return nil
	}
	a := s.target.Account
	_, err := tx.Exec(ctx, a.AddSQL, append(slices.Clone(a.Args), -bytes, -n)...)
	return translate(err)
}

// inTx runs fn in a transaction on the Store's database, translating the
// errors of its begin and commit.
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return translate(pgx.BeginFunc(ctx, s.db, fn))
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
	args := s.guarded(id, data, int64(len(data)))
	upsert := func(db pg.DB) error {
		tag, err := db.Exec(ctx, s.upsertSQL, args...)
		if err != nil {
			return translate(err)
		}
		if tag.RowsAffected() == 0 {
			return ErrGuardFailed
		}
		return nil
	}
	return retry(ctx, writes, func() error {
		if err := context.Cause(ctx); err != nil {
			return err
		}
		if !s.quota {
			return upsert(s.db)
		}
		return s.inTx(ctx, func(tx pgx.Tx) error {
			if err := s.reserve(ctx, tx, id, int64(len(data))); err != nil {
				return err
			}
			return upsert(tx)
		})
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
	del := func(db pg.DB) (int64, error) {
		var size int64
		if err := db.QueryRow(ctx, s.deleteSQL, s.guarded(id)...).Scan(&size); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return 0, errNotFound(id)
			}
			return 0, translate(err)
		}
		return size, nil
	}
	return retry(ctx, writes, func() error {
		if !s.quota {
			_, err := del(s.db)
			return err
		}
		return s.inTx(ctx, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, s.target.Account.LockSQL, s.target.Account.Args...); err != nil {
				return translate(err)
			}
			size, err := del(tx)
			if err != nil {
				return err
			}
			return s.release(ctx, tx, 1, size)
		})
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
	err := s.db.QueryRow(ctx, s.statsSQL, s.guarded()...).Scan(&st.Messages, &st.Bytes, &oldest, &newest)
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
		var n, bytes int64
		batch := func(db pg.DB) error {
			return db.QueryRow(ctx, s.purgeSQL, s.guarded(before, PurgeBatch)...).Scan(&n, &bytes)
		}
		var err error
		if s.quota {
			err = s.inTx(ctx, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, s.target.Account.LockSQL, s.target.Account.Args...); err != nil {
					return err
				}
				if err := batch(tx); err != nil {
					return err
				}
				return s.release(ctx, tx, n, bytes)
			})
		} else {
			err = batch(s.db)
		}
		if err != nil {
			return total, translate(err)
		}
		total += n
		if n < PurgeBatch {
			return total, nil
		}
	}
}

// clauses are the pieces of SQL that the statements on a Target share:
// SharedTable's tenant column before the message id, the message row's
// condition, parameter numbers and the registry guard's conditions.
type clauses struct {
	key      string // the tenant's value before the message id in a VALUES list, or ""
	keyCols  string // the tenant column before message_id in a column list, or ""
	part     string // the tenant's rows, "tenant_id = $1 AND ", or ""
	conflict string // the primary key's columns
	where    string // the message's row
	k        int    // the message id's parameter; statements on the whole table lower it by one
	guard    *Guard
}

func (t Target) clauses() *clauses {
	c := &clauses{conflict: "message_id", k: 1, guard: t.Guard}
	if t.Partition != "" {
		c.key, c.keyCols, c.conflict, c.k = "$1::pg_catalog.text, ", schema.TenantColumn+", ", schema.TenantColumn+", message_id", 2
		c.part = schema.TenantColumn + eq + "$1 AND "
	}
	c.where = c.part + "message_id" + eq + fmt.Sprintf("$%d", c.k)
	return c
}

// p numbers the statement's own parameters after the message id.
func (c *clauses) p(i int) string { return fmt.Sprintf("$%d", c.k+i) }

// read and write return the guard's condition for a statement with n
// parameters of its own, preceded by AND ("" without a guard).
func (c *clauses) read(n int) string {
	if c.guard == nil {
		return ""
	}
	return " AND " + c.guard.Read(c.k+n+1)
}

func (c *clauses) write(n int) string {
	if c.guard == nil {
		return ""
	}
	return " AND " + c.guard.Write(c.k+n+1)
}

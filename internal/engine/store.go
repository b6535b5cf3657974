package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/internal/quota"
	"github.com/pgtenant/pgtenant/internal/stmt"
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
	// Quota, when set, bounds the target's total body bytes and number of
	// messages: a write that would exceed either fails with a
	// *quota.Error and stores nothing. It needs a guarded Target: the
	// usage is kept in the guard's owner row (see package quota).
	Quota quota.Limits
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
}

// Guard is a condition on the target's owner, built from validated,
// quoted identifiers only (see registry.GuardsOf). Read and Write are SQL
// conditions; Write may lock what it reads until the write commits. A
// guarded INSERT ... SELECT follows its select list with Insert (a FROM
// clause, or WHERE and the condition), and in a shared table selects Key
// as the tenant column's value. Their parameters are @store and @tenant,
// bound to Store and Tenant, and the target's @tenant_id.
type Guard struct {
	Read, Write   string
	Insert, Key   string
	Store, Tenant string
}

// Store moves message bodies in and out of one Target. It is safe for
// concurrent use; it holds no connection between calls.
type Store struct {
	db        pg.DB
	mode      pgx.QueryExecMode
	target    Target
	maxSize   int64
	chunkSize int
	quota     quota.Limits
	base      values // the target's values
	lock      stmt.Stmt[values]

	put, chunkCleanAll, chunkedPut, chunkInsert, chunkClean, probe, chunkScan stmt.Stmt[values]
	get, del, stats, purge, purgeChunks                                       stmt.Stmt[values]
	// putInline and delInline are the writes of inline bodies that leave
	// the chunk table alone (not set under a quota).
	putInline, delInline stmt.Stmt[values]
}

// NewStore returns a Store for t over db.
func NewStore(db pg.DB, t Target, o Options) (*Store, error) {
	var err error
	if o.Mode, err = execMode(o.Mode); err != nil {
		return nil, err
	}
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = DefaultMaxMessageSize
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.Quota.Set() && t.Guard == nil {
		return nil, errNoGuardForQuota
	}
	s := &Store{db: db, mode: o.Mode, target: t, maxSize: o.MaxMessageSize, chunkSize: o.ChunkSize,
		quota: o.Quota, base: t.values(o.Quota)}
	c := &compiler{parts: t.parts()}
	s.chunkInsert = c.compile(chunkInsertSQL)
	s.chunkCleanAll = c.compile(chunkCleanAllSQL)
	s.chunkClean = c.compile(chunkCleanSQL)
	s.probe = c.compile(probeSQL)
	s.chunkScan = c.compile(chunkScanSQL)
	s.get = c.compile(getSQL)
	s.stats = c.compile(statsSQL)
	if o.Quota.Set() {
		s.lock = c.compile(quota.LockSQL)
		s.put = c.compile(quotaPutSQL)
		s.chunkedPut = c.compile(quotaChunkedPutSQL)
		s.del = c.compile(quotaDeleteSQL)
		s.purge = c.compile(quotaPurgeSQL)
	} else {
		s.put = c.compile(putSQL)
		s.putInline = c.compile(putInlineSQL)
		s.chunkedPut = c.compile(chunkedPutSQL)
		s.del = c.compile(deleteSQL)
		s.delInline = c.compile(deleteInlineSQL)
		s.purge = c.compile(purgeSQL)
		s.purgeChunks = c.compile(purgeChunksSQL)
	}
	if c.err != nil {
		return nil, c.err
	}
	return s, nil
}

// values returns the target's part of every statement's values.
func (t Target) values(q quota.Limits) values {
	v := values{partition: t.Partition, maxBytes: q.Bytes, maxMessages: q.Messages}
	if t.Guard != nil {
		v.store, v.tenant = t.Guard.Store, t.Guard.Tenant
	}
	return v
}

// call returns the values of a call on message id.
func (s *Store) call(id string) *values {
	v := s.base
	v.messageID = id
	v.now = time.Now()
	return &v
}

// Statements returns the compiled SQL text of the Store's inline put, its
// read of a message row and its delete, and the names of their parameters
// in order, for benchmarks that run them without the Store.
func (s *Store) Statements() (put, get, del string, params [3][]string) {
	return s.put.SQL, s.get.SQL, s.del.SQL, [3][]string{s.put.Params, s.get.Params, s.del.Params}
}

// Target returns the Store's target.
func (s *Store) Target() Target { return s.target }

// row runs st with v and scans its one row into dest.
func (s *Store) row(ctx context.Context, db pg.DB, st stmt.Stmt[values], v *values, dest ...any) error {
	return db.QueryRow(ctx, st.SQL, st.Args(s.mode, v)...).Scan(dest...)
}

// lockedRow is row for a statement that changes the usage: under a quota
// it runs the lock on the owner's usage row first, in the same implicit
// transaction and round trip (a pipeline), so that st takes its snapshot
// with the lock held.
func (s *Store) lockedRow(ctx context.Context, db pg.DB, st stmt.Stmt[values], v *values, dest ...any) error {
	if !s.quota.Set() {
		return s.row(ctx, db, st, v, dest...)
	}
	b := &pgx.Batch{}
	b.Queue(s.lock.SQL, s.lock.Args(nil, v)...)
	b.Queue(st.SQL, st.Args(nil, v)...)
	br := db.SendBatch(ctx, b)
	_, err := br.Exec()
	if err == nil {
		err = br.QueryRow().Scan(dest...)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// then runs st with v and, with cleanup, the removal of the message's
// pieces after it, in one pipeline: one round trip and one implicit
// transaction, st's locks first. read reads st's result.
func (s *Store) then(ctx context.Context, db pg.DB, st stmt.Stmt[values], v *values, cleanup bool, read func(pgx.BatchResults) error) error {
	b := &pgx.Batch{}
	b.Queue(st.SQL, st.Args(nil, v)...)
	if cleanup {
		b.Queue(s.chunkCleanAll.SQL, s.chunkCleanAll.Args(nil, v)...)
	}
	br := db.SendBatch(ctx, b)
	err := read(br)
	if err == nil && cleanup {
		_, err = br.Exec()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// charged turns the result of a quota'd write into its error: nil when it
// wrote, ErrGuardFailed when the owner refuses writes (no usage: the
// guard), else the limit's *quota.Error.
func (s *Store) charged(wrote bool, bytes, messages *int64) error {
	switch {
	case wrote:
		return nil
	case bytes == nil || messages == nil:
		return ErrGuardFailed
	}
	if err := s.quota.Check(*bytes, *messages); err != nil {
		return err
	}
	return ErrGuardFailed
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
	return retry(ctx, writes, func() error {
		if err := context.Cause(ctx); err != nil {
			return err
		}
		v := s.call(id)
		v.data, v.size = data, int64(len(data))
		return s.putBody(ctx, v)
	})
}

// putBody stores the inline body in v: without a quota first with
// putInline, which leaves the chunk table alone, and only if that changed
// nothing (the row points at pieces, or the guard refused) with put and
// the removal of the pieces, in one transaction.
func (s *Store) putBody(ctx context.Context, v *values) error {
	if !s.quota.Set() {
		if err := s.write(ctx, s.db, s.putInline, v, false); !errors.Is(err, ErrGuardFailed) {
			return err
		}
	}
	return s.write(ctx, s.db, s.put, v, true)
}

// write runs a put statement (inline or chunked) with v; with cleanup
// the message's pieces go too, in the same round trip and transaction.
func (s *Store) write(ctx context.Context, db pg.DB, st stmt.Stmt[values], v *values, cleanup bool) error {
	if !s.quota.Set() {
		var tag pgconn.CommandTag
		err := s.then(ctx, db, st, v, cleanup, func(br pgx.BatchResults) (err error) {
			tag, err = br.Exec()
			return err
		})
		if err != nil {
			return translate(err)
		}
		if tag.RowsAffected() == 0 {
			return ErrGuardFailed
		}
		return nil
	}
	var (
		wrote           bool
		bytes, messages *int64
	)
	if err := s.lockedRow(ctx, db, st, v, &wrote, &bytes, &messages); err != nil {
		return translate(err)
	}
	return s.charged(wrote, bytes, messages)
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
		var (
			size int64
			err  error
		)
		if s.quota.Set() {
			err = s.lockedRow(ctx, s.db, s.del, s.call(id), &size)
		} else {
			// An inline message goes without the chunk table; a chunked
			// one, or none, takes the delete with the removal of pieces.
			err = s.row(ctx, s.db, s.delInline, s.call(id), &size)
			if errors.Is(err, pgx.ErrNoRows) {
				err = s.then(ctx, s.db, s.del, s.call(id), true, func(br pgx.BatchResults) error { return br.QueryRow().Scan(&size) })
			}
		}
		if errors.Is(err, pgx.ErrNoRows) {
			return errNotFound(id)
		}
		return translate(err)
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
	err := s.row(ctx, s.db, s.stats, s.call(""), &st.Messages, &st.Bytes, &oldest, &newest)
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
		v := s.call("")
		v.before, v.limit = before, PurgeBatch
		n, err := s.purgeBatch(ctx, v)
		if err != nil {
			return total, translate(err)
		}
		total += n
		if n < PurgeBatch {
			return total, nil
		}
	}
}

// purgeBatch deletes one batch of messages and their pieces, and returns
// how many messages.
func (s *Store) purgeBatch(ctx context.Context, v *values) (int64, error) {
	var n, bytes int64
	if s.quota.Set() {
		err := s.lockedRow(ctx, s.db, s.purge, v, &n, &bytes)
		return n, err
	}
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, s.purge.SQL, s.purge.Args(s.mode, v)...)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
			var id string
			err := r.Scan(&id, &bytes)
			return id, err
		})
		if err != nil || len(ids) == 0 {
			return err
		}
		n, v.ids = int64(len(ids)), ids
		_, err = tx.Exec(ctx, s.purgeChunks.SQL, s.purgeChunks.Args(s.mode, v)...)
		return err
	})
	return n, err
}

package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgtenant/pgtenant/internal/ddl"
	"github.com/pgtenant/pgtenant/internal/engine"
	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/schema"
	datastorage "schneider.vip/retryspool/storage/data"
)

// Defaults of a Factory.
const (
	DefaultTableName = "retryspool_data"
	DefaultMaxOpen   = pg.DefaultMaxOpen
	DefaultMaxIdle   = pg.DefaultMaxIdle
	// DefaultMaxConnLifetime recycles pooled connections so that each
	// server backend's catalog cache, which grows with every table it
	// touches, is bounded.
	DefaultMaxConnLifetime = pg.DefaultMaxConnLifetime
	// DefaultMaxConnIdleTime closes connections idle that long, beyond the
	// maxIdle that are kept.
	DefaultMaxConnIdleTime = pg.DefaultMaxConnIdleTime
	// setupTimeout bounds Create's connection and DDL.
	setupTimeout = 30 * time.Second
)

// Factory creates Backends over one table. It implements
// datastorage.Factory. Its WithX methods return a modified copy and never
// change the receiver, so a Factory in use can be shared freely.
type Factory struct {
	dsn              string
	table            string
	maxOpen, maxIdle int
	pool             *pgxpool.Pool
	mode             pgx.QueryExecMode
	maxSize          int64
}

var _ datastorage.Factory = (*Factory)(nil)

// NewFactory returns a Factory that connects to dsn (a PostgreSQL URL or
// key=value string) and stores bodies in the table "retryspool_data".
func NewFactory(dsn string) *Factory {
	return &Factory{dsn: dsn, table: DefaultTableName, maxOpen: DefaultMaxOpen, maxIdle: DefaultMaxIdle,
		mode: pgx.QueryExecModeCacheStatement}
}

func (f *Factory) with(change func(*Factory)) *Factory {
	c := *f
	change(&c)
	return &c
}

// WithTableName returns a copy that uses table name, given as "table" or
// "schema.table" (see schema.ParseTable; an invalid name fails Create with
// schema.ErrInvalidName).
func (f *Factory) WithTableName(name string) *Factory {
	return f.with(func(c *Factory) { c.table = name })
}

// WithConnectionLimits returns a copy whose pool has at most maxOpen
// connections (pgxpool MaxConns) and keeps maxIdle of them open when idle
// (pgxpool MinConns); connections beyond maxIdle close after
// DefaultMaxConnIdleTime idle. Ignored with WithPool.
func (f *Factory) WithConnectionLimits(maxOpen, maxIdle int) *Factory {
	return f.with(func(c *Factory) { c.maxOpen, c.maxIdle = maxOpen, maxIdle })
}

// WithPool returns a copy that uses the caller's pool instead of opening
// one; the Backend's Close then leaves the pool open.
func (f *Factory) WithPool(pool *pgxpool.Pool) *Factory {
	return f.with(func(c *Factory) { c.pool = pool })
}

// WithExecMode returns a copy that sends statements in mode m (default
// pgx.QueryExecModeCacheStatement). pgx.QueryExecModeCacheDescribe suits
// poolers in transaction mode; the text modes fail Create with ErrTextMode.
func (f *Factory) WithExecMode(m pgx.QueryExecMode) *Factory {
	return f.with(func(c *Factory) { c.mode = m })
}

// WithMaxMessageSize returns a copy that refuses bodies over n bytes with
// ErrTooLarge (default DefaultMaxMessageSize, 512 MiB), counted as they
// arrive.
func (f *Factory) WithMaxMessageSize(n int64) *Factory {
	return f.with(func(c *Factory) { c.maxSize = n })
}

// Name returns "postgres".
func (f *Factory) Name() string { return "postgres" }

// Create opens the pool (unless one was given), creates the table if it is
// missing, and returns the Backend, a *Backend.
func (f *Factory) Create() (datastorage.Backend, error) {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	return f.Open(ctx)
}

// Open is Create with a context.
func (f *Factory) Open(ctx context.Context) (*Backend, error) {
	table, err := schema.ParseTable(f.table, "public")
	if err != nil {
		return nil, err
	}
	if err := engine.CheckExecMode(f.mode); err != nil {
		return nil, err
	}
	pool, own := f.pool, false
	if pool != nil {
		// Pipelines (a write and its clean-up) run in the pool's own
		// default mode.
		if err := engine.CheckExecMode(pool.Config().ConnConfig.DefaultQueryExecMode); err != nil {
			return nil, fmt.Errorf("WithPool: the pool's default exec mode: %w", err)
		}
	}
	if pool == nil {
		if pool, err = pg.OpenPool(ctx, f.dsn, pg.PoolOptions{MaxOpen: f.maxOpen, MaxIdle: f.maxIdle}); err != nil {
			return nil, err
		}
		own = true
	}
	fail := func(err error) (*Backend, error) {
		if own {
			pool.Close()
		}
		return nil, err
	}
	if err := ddl.EnsureTable(ctx, pool, table); err != nil {
		if cerr := pg.ConnectFailure(&pool.Config().ConnConfig.Config, own && f.dsn == "", err); errors.Is(cerr, pg.ErrConnection) {
			return fail(cerr)
		}
		return fail(fmt.Errorf("creating table %s: %w", table, pg.Classify(err)))
	}
	store, err := engine.NewStore(pool, engine.Target{Table: table}, engine.Options{Mode: f.mode, MaxMessageSize: f.maxSize})
	if err != nil {
		return fail(err)
	}
	return &Backend{store: store, pool: pool, ownPool: own}, nil
}

// Backend is a datastorage.Backend over one table. It is safe for
// concurrent use.
type Backend struct {
	store     *engine.Store
	pool      *pgxpool.Pool
	ownPool   bool
	closed    atomic.Bool
	closeOnce sync.Once
	streams   engine.Tracker
}

var _ datastorage.Backend = (*Backend)(nil)

// StoreData stores the body read from data under messageID and returns the
// number of bytes stored. A body over one chunk (1 MiB) streams into the
// database as it is read.
func (b *Backend) StoreData(ctx context.Context, messageID string, data io.Reader) (int64, error) {
	if b.closed.Load() {
		return 0, ErrClosed
	}
	sctx, done := b.streams.Track(ctx)
	defer done()
	n, err := b.store.StoreFrom(sctx, messageID, data)
	return n, engine.ClosedErr(sctx, err)
}

// GetDataReader returns a reader over the body stored under messageID, or
// an error that errors.Is datastorage.ErrDataNotFound. A large body is
// streamed from one pooled connection, held until Close or until ctx ends.
func (b *Backend) GetDataReader(ctx context.Context, messageID string) (io.ReadCloser, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	sctx, done := b.streams.Track(ctx)
	rc, err := b.store.Reader(sctx, messageID)
	if err != nil {
		done()
		return nil, engine.ClosedErr(sctx, err)
	}
	return &engine.TrackedReader{ReadCloser: rc, Ctx: sctx, Done: done}, nil
}

// GetDataWriter returns a writer that stores its body under messageID when
// closed; the old version stays until then.
func (b *Backend) GetDataWriter(ctx context.Context, messageID string) (io.WriteCloser, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	sctx, done := b.streams.Track(ctx)
	w, err := b.store.Writer(sctx, messageID)
	if err != nil {
		done()
		return nil, err
	}
	return &trackedWriter{StreamWriter: w, ctx: sctx, done: done}, nil
}

// trackedWriter ends its tracking on Close.
type trackedWriter struct {
	*engine.StreamWriter
	ctx  context.Context
	done func()
	once sync.Once
}

func (w *trackedWriter) Write(p []byte) (int, error) {
	n, err := w.StreamWriter.Write(p)
	return n, engine.ClosedErr(w.ctx, err)
}

func (w *trackedWriter) Close() error {
	defer w.once.Do(w.done)
	return engine.ClosedErr(w.ctx, w.StreamWriter.Close())
}

// DeleteData removes the body stored under messageID, or returns an error
// that errors.Is datastorage.ErrDataNotFound.
func (b *Backend) DeleteData(ctx context.Context, messageID string) error {
	if b.closed.Load() {
		return ErrClosed
	}
	return b.store.Delete(ctx, messageID)
}

// Pool returns the pool the Backend uses: the caller's (WithPool) or its
// own.
func (b *Backend) Pool() *pgxpool.Pool { return b.pool }

// Close ends the readers and writers still open and StoreData calls in
// flight (their transactions roll back: the old version of a message being
// written stays; their next Read, Write or Close fails with ErrClosed),
// then closes the pool if the Backend opened it. It returns within the
// time a rollback takes, as tenant.Router.Close does. It is idempotent.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		b.streams.Close()
		if b.ownPool {
			b.pool.Close()
		}
	})
	return nil
}

package backend

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgtenant/pgtenant/schema"
	datastorage "schneider.vip/retryspool/storage/data"
)

// Defaults of a Factory.
const (
	DefaultTableName = "retryspool_data"
	DefaultMaxOpen   = 25
	DefaultMaxIdle   = 5
	// DefaultMaxConnLifetime recycles pooled connections so that each
	// server backend's catalog cache, which grows with every table it
	// touches, is bounded.
	DefaultMaxConnLifetime = 15 * time.Minute
	// DefaultMaxConnIdleTime closes connections idle that long, beyond the
	// maxIdle that are kept.
	DefaultMaxConnIdleTime = 5 * time.Minute
	// setupTimeout bounds Create's connection and DDL.
	setupTimeout = 30 * time.Second
)

// Factory creates Backends over one table. Its WithX methods return a
// modified copy and never change the receiver, so a Factory in use can be
// shared freely.
type Factory struct {
	dsn              string
	table            string
	maxOpen, maxIdle int
	pool             *pgxpool.Pool
	mode             pgx.QueryExecMode
	maxSize          int64
}

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
// "schema.table" (see schema.ParseTable; an invalid name fails Create).
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
	if err := checkExecMode(f.mode); err != nil {
		return nil, err
	}
	pool, own := f.pool, false
	if pool == nil {
		cfg, err := PoolConfig(f.dsn, f.maxOpen, f.maxIdle)
		if err != nil {
			return nil, err
		}
		if pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
			return nil, fmt.Errorf("pgtenant: opening pool: %w", err)
		}
		own = true
	}
	if err := schema.EnsureTable(ctx, pool, pool, table, false); err != nil {
		if own {
			pool.Close()
		}
		return nil, fmt.Errorf("pgtenant: creating table %s: %w", table, err)
	}
	store, err := NewStore(pool, Target{Table: table}, Options{Mode: f.mode, MaxMessageSize: f.maxSize})
	if err != nil {
		return nil, err
	}
	return &Backend{Store: store, pool: pool, ownPool: own}, nil
}

// PoolConfig parses dsn into a pool configuration with pgtenant's defaults:
// MaxConns = maxOpen, MinConns = maxIdle (at most maxOpen),
// MaxConnLifetime = DefaultMaxConnLifetime (with 10% jitter),
// MaxConnIdleTime = DefaultMaxConnIdleTime, except where the DSN sets
// them (pool_max_conn_lifetime, pool_max_conn_lifetime_jitter,
// pool_max_conn_idle_time). Non-positive limits keep the package defaults.
func PoolConfig(dsn string, maxOpen, maxIdle int) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("pgtenant: parsing dsn: %w", err)
	}
	if maxOpen <= 0 {
		maxOpen = DefaultMaxOpen
	}
	if maxIdle < 0 {
		maxIdle = 0
	}
	cfg.MaxConns = int32(maxOpen)
	cfg.MinConns = int32(min(maxIdle, maxOpen))
	if !dsnSets(dsn, "pool_max_conn_lifetime") {
		cfg.MaxConnLifetime = DefaultMaxConnLifetime
	}
	if !dsnSets(dsn, "pool_max_conn_lifetime_jitter") {
		cfg.MaxConnLifetimeJitter = cfg.MaxConnLifetime / 10
	}
	if !dsnSets(dsn, "pool_max_conn_idle_time") {
		cfg.MaxConnIdleTime = DefaultMaxConnIdleTime
	}
	return cfg, nil
}

// dsnSets reports whether dsn, a URL or keyword/value connection string,
// sets key.
func dsnSets(dsn, key string) bool {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		return err == nil && u.Query().Has(key)
	}
	for _, field := range strings.Fields(dsn) {
		if k, _, ok := strings.Cut(field, "="); ok && strings.TrimSpace(k) == key {
			return true
		}
	}
	return false
}

// Backend is a datastorage.Backend over one table. Its Store does the work;
// Backend adds the closed state and pool ownership.
type Backend struct {
	*Store
	pool      *pgxpool.Pool
	ownPool   bool
	closed    atomic.Bool
	closeOnce sync.Once
}

// StoreData stores the body read from data under messageID and returns the
// number of bytes stored.
func (b *Backend) StoreData(ctx context.Context, messageID string, data io.Reader) (int64, error) {
	if b.closed.Load() {
		return 0, ErrClosed
	}
	return b.StoreFrom(ctx, messageID, data)
}

// GetDataReader returns a reader over the body stored under messageID.
func (b *Backend) GetDataReader(ctx context.Context, messageID string) (io.ReadCloser, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	return b.Reader(ctx, messageID)
}

// GetDataWriter returns a writer that stores its body under messageID when
// closed.
func (b *Backend) GetDataWriter(ctx context.Context, messageID string) (io.WriteCloser, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	w, err := b.Writer(ctx, messageID)
	if err != nil {
		return nil, err
	}
	return w, nil
}

// DeleteData removes the body stored under messageID.
func (b *Backend) DeleteData(ctx context.Context, messageID string) error {
	if b.closed.Load() {
		return ErrClosed
	}
	return b.Delete(ctx, messageID)
}

// Pool returns the pool the Backend uses.
func (b *Backend) Pool() *pgxpool.Pool { return b.pool }

// Close closes the pool if the Backend opened it. It is idempotent.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		if b.ownPool {
			b.pool.Close()
		}
	})
	return nil
}

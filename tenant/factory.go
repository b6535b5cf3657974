package tenant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgtenant/pgtenant/backend"
	"github.com/pgtenant/pgtenant/internal/affinity"
	"github.com/pgtenant/pgtenant/internal/engine"
	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/schema"
	"go.opentelemetry.io/otel/metric"
	datastorage "schneider.vip/retryspool/storage/data"
)

// Defaults of a Factory.
const (
	// DefaultCacheSize is the number of tenants whose objects the LRU
	// remembers as existing.
	DefaultCacheSize = 10_000
	// DefaultStatementCacheCapacity is the size of pgx's per-connection
	// prepared statement cache in pools the Factory opens: enough for the
	// three statements of about 1 300 hot tenants per connection.
	DefaultStatementCacheCapacity = 4096
	// DefaultAffinity is the connections per group of tenant-affine
	// connections in pools the Factory opens; see WithConnectionAffinity.
	DefaultAffinity = 1
	// DefaultLockTimeout bounds how long Drop waits for a tenant's locks.
	DefaultLockTimeout = 5 * time.Second
)

// Factory makes Routers. It implements datastorage.Factory. WithX methods
// return a modified copy and never change the receiver; every copy has its
// own shared state, so Routers created by one Factory value share one pool
// and one tenant cache, and Routers of different Factory values share
// nothing.
type Factory struct {
	dsn              string
	pool             *pgxpool.Pool
	isolation        schema.Isolation
	table            string
	tableSchema      string
	maxOpen, maxIdle int
	cacheSize        int
	stmtCacheCap     int
	mode             pgx.QueryExecMode
	resolver         Resolver
	lockTimeout      time.Duration
	maxSize          int64
	// tenantConcurrency bounds operations in flight per tenant; 0: none.
	tenantConcurrency int
	quotaBytes        int64
	quotaMessages     int64
	meterProvider     metric.MeterProvider
	tenantAttr        bool
	logger            *slog.Logger
	tracer            pgx.QueryTracer
	connLifetime      time.Duration
	// affinity is the connections per group of tenant-affine
	// connections; 0: off.
	affinity int

	// pinned is the tenant of a ForTenant Factory, pin whether there is
	// one.
	pinned string
	pin    bool

	shared *sharedCore
}

// sharedCore is the state Routers of one Factory value share.
type sharedCore struct {
	mu   sync.Mutex
	core *core
	refs int
}

// NewFactory returns a Factory that connects to dsn, keeps each tenant in
// its own schema (schema.SchemaPerTenant) with the base table
// "retryspool_data", and reads the tenant from the context (WithTenant).
func NewFactory(dsn string) *Factory {
	return &Factory{
		dsn:          dsn,
		isolation:    schema.SchemaPerTenant,
		table:        backend.DefaultTableName,
		tableSchema:  "public",
		maxOpen:      backend.DefaultMaxOpen,
		maxIdle:      backend.DefaultMaxIdle,
		cacheSize:    DefaultCacheSize,
		stmtCacheCap: DefaultStatementCacheCapacity,
		affinity:     DefaultAffinity,
		mode:         pgx.QueryExecModeCacheStatement,
		resolver:     ContextResolver,
		lockTimeout:  DefaultLockTimeout,
		shared:       &sharedCore{},
	}
}

func (f *Factory) with(change func(*Factory)) *Factory {
	c := *f
	change(&c)
	c.shared = &sharedCore{}
	return &c
}

// WithPool returns a copy that uses the caller's pool; Routers then never
// close it. The pool's own statement cache settings apply; the exec mode
// (WithExecMode) is still passed with every statement.
func (f *Factory) WithPool(pool *pgxpool.Pool) *Factory {
	return f.with(func(c *Factory) { c.pool = pool })
}

// WithIsolation returns a copy that uses isolation mode iso.
func (f *Factory) WithIsolation(iso schema.Isolation) *Factory {
	return f.with(func(c *Factory) { c.isolation = iso })
}

// WithTableName returns a copy with base table name: the table created in
// each tenant's schema (SchemaPerTenant), or the shared table (SharedTable,
// where "schema.table" is allowed). In TablePerTenant the tenants' tables
// are named after the tenants; see WithTableSchema.
func (f *Factory) WithTableName(name string) *Factory {
	return f.with(func(c *Factory) { c.table = name })
}

// WithTableSchema returns a copy whose TablePerTenant tables live in schema
// name (default "public").
func (f *Factory) WithTableSchema(name string) *Factory {
	return f.with(func(c *Factory) { c.tableSchema = name })
}

// WithConnectionLimits returns a copy whose pool has at most maxOpen
// connections and keeps maxIdle open (see backend.PoolConfig). Ignored with
// WithPool.
func (f *Factory) WithConnectionLimits(maxOpen, maxIdle int) *Factory {
	return f.with(func(c *Factory) { c.maxOpen, c.maxIdle = maxOpen, maxIdle })
}

// WithConnectionAffinity returns a copy whose own pool is split into groups
// of connsPerGroup connections, each tenant using a stable pair of groups
// (its first choice, and its second when the first is busy): each server
// backend then caches the catalog entries and prepared statements of a
// fraction of the tenants instead of all of them, which is faster and
// takes less server memory with hundreds of tenants or more. A tenant
// that fills its pair by itself (a busy tenant, or the only one) spreads
// over further groups up to its fair share of the pool. Statements
// waiting for a group are admitted round robin among tenants, so a tenant
// flooding its groups does not starve the tenants that share them.
// connsPerGroup 0 turns affinity off: any connection serves any tenant.
// The default is DefaultAffinity. Ignored with WithPool (pgtenant cannot
// split a pool it does not own); meaningless behind a transaction pooler,
// which hands each transaction to any server connection.
func (f *Factory) WithConnectionAffinity(connsPerGroup int) *Factory {
	return f.with(func(c *Factory) { c.affinity = max(connsPerGroup, 0) })
}

// WithMaxConnLifetime returns a copy whose pool closes each connection
// after d (±10%), which frees the server backend's caches: every backend
// keeps catalog and relation cache entries for each tenant it touched
// (about 30 KiB per tenant in the per-tenant modes) and the plans of its
// prepared statements (about 15 KiB each); see the README, "Scale limits".
// The default is backend.DefaultMaxConnLifetime, or the DSN's
// pool_max_conn_lifetime. Ignored with WithPool; d <= 0 keeps the default.
func (f *Factory) WithMaxConnLifetime(d time.Duration) *Factory {
	return f.with(func(c *Factory) { c.connLifetime = d })
}

// WithCacheSize returns a copy whose LRU remembers n tenants (default
// DefaultCacheSize). An evicted tenant costs one cheap check on its next
// write.
func (f *Factory) WithCacheSize(n int) *Factory {
	return f.with(func(c *Factory) { c.cacheSize = n })
}

// WithResolver returns a copy that finds tenants with r instead of
// FromContext.
func (f *Factory) WithResolver(r Resolver) *Factory {
	return f.with(func(c *Factory) { c.resolver = r })
}

// WithExecMode returns a copy that sends statements in mode m. The default,
// pgx.QueryExecModeCacheStatement, prepares each tenant's statements once
// per connection; pgx.QueryExecModeCacheDescribe prepares nothing on the
// server (use it behind PgBouncer in transaction mode). The text modes are
// refused: they hex-encode BYTEA.
func (f *Factory) WithExecMode(m pgx.QueryExecMode) *Factory {
	return f.with(func(c *Factory) { c.mode = m })
}

// WithStatementCacheCapacity returns a copy whose pool (when the Factory
// opens it) caches n statements per connection (default
// DefaultStatementCacheCapacity; pgx's own default is 512).
func (f *Factory) WithStatementCacheCapacity(n int) *Factory {
	return f.with(func(c *Factory) { c.stmtCacheCap = n })
}

// WithLockTimeout returns a copy whose Drop waits at most d for a tenant's
// locks (default DefaultLockTimeout).
func (f *Factory) WithLockTimeout(d time.Duration) *Factory {
	return f.with(func(c *Factory) { c.lockTimeout = d })
}

// WithMaxMessageSize returns a copy that refuses bodies over n bytes with
// ErrTooLarge, counted as they arrive (default
// backend.DefaultMaxMessageSize, 512 MiB).
func (f *Factory) WithMaxMessageSize(n int64) *Factory {
	return f.with(func(c *Factory) { c.maxSize = n })
}

// WithTenantConcurrency returns a copy that lets at most n operations of
// one tenant run at once (0, the default, means no limit), so that one busy
// tenant cannot take every pooled connection. A call over the limit waits
// for a place, or for its context to end. An open reader or writer holds its
// place until Close.
func (f *Factory) WithTenantConcurrency(n int) *Factory {
	return f.with(func(c *Factory) { c.tenantConcurrency = n })
}

// WithQuota returns a copy that bounds each tenant's stored bytes and
// number of messages (0: no bound). A write that would exceed either fails
// with an error that errors.Is ErrQuotaExceeded and stores nothing. The
// check reads the tenant's committed usage before each write commits (one
// aggregate over the tenant's rows, so it costs more the more messages the
// tenant holds); concurrent writes of one tenant can each pass it and
// overshoot by their own sizes, unless WithTenantConcurrency(1).
func (f *Factory) WithQuota(maxBytes, maxMessages int64) *Factory {
	return f.with(func(c *Factory) { c.quotaBytes, c.quotaMessages = maxBytes, maxMessages })
}

// WithMeterProvider returns a copy that records OpenTelemetry metrics
// through mp (default: none). See the README for the instruments.
func (f *Factory) WithMeterProvider(mp metric.MeterProvider) *Factory {
	return f.with(func(c *Factory) { c.meterProvider = mp })
}

// WithTenantAttribute returns a copy that adds the tenant id as the
// "tenant" attribute to per-tenant metrics. Off by default: with many
// tenants it multiplies the number of time series.
func (f *Factory) WithTenantAttribute(on bool) *Factory {
	return f.with(func(c *Factory) { c.tenantAttr = on })
}

// WithLogger returns a copy that logs through l: tenant creation and
// failures to ensure one (Debug, Warn), Provision, Drop and MigrateAll
// (Info). Silent by default.
func (f *Factory) WithLogger(l *slog.Logger) *Factory {
	return f.with(func(c *Factory) { c.logger = l })
}

// WithQueryTracer returns a copy whose own pool traces queries with t (for
// example OpenTelemetry's tracer for pgx). With WithPool, set the tracer on
// that pool's configuration instead.
func (f *Factory) WithQueryTracer(t pgx.QueryTracer) *Factory {
	return f.with(func(c *Factory) { c.tracer = t })
}

// ForTenant returns a Factory pinned to tenant id that shares f's pool and
// tenant cache: Routers and metadata backends made from it (Create, Meta)
// never open another pool, and the pool closes when the last of all of
// them closes. They serve only tenant id: a context without a tenant uses
// id, a context naming another tenant is refused with ErrTenantMismatch
// (nothing is read or written), and an invalid id fails Create with
// ErrInvalidTenant. This is how a queue host runs one RetrySpool queue per
// tenant on one pool; see the README, "Running a queue host".
//
// Like every WithX, ForTenant leaves f unchanged; a WithX on the pinned
// Factory returns a copy with state of its own again.
func (f *Factory) ForTenant(id string) *Factory {
	c := *f
	c.pinned, c.pin = id, true
	return &c
}

// Name returns "pgtenant".
func (f *Factory) Name() string { return "pgtenant" }

// Create returns a new Router as a datastorage.Backend.
func (f *Factory) Create() (datastorage.Backend, error) {
	return f.NewRouter()
}

// NewRouter returns a new Router. The first Router of a Factory value opens
// the pool (unless WithPool) and creates the registry and, in SharedTable
// mode, the shared table; later Routers share them. The pool closes when the
// last Router closes.
func (f *Factory) NewRouter() (*Router, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return f.OpenRouter(ctx)
}

// OpenRouter is NewRouter with a context.
func (f *Factory) OpenRouter(ctx context.Context) (*Router, error) {
	s := f.shared
	if s == nil {
		return nil, errors.New("pgtenant: Factory not made by NewFactory")
	}
	if f.pin {
		if err := Validate(f.pinned); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.core == nil {
		c, err := f.openCore(ctx)
		if err != nil {
			return nil, err
		}
		s.core = c
	}
	s.refs++
	return &Router{core: s.core, pinned: f.pinned, release: func() { f.release(s) }}, nil
}

// release gives back one Router's reference; the last one closes the core,
// outside the lock, so that opening a Router of this Factory never waits
// for a pool to close.
func (f *Factory) release(s *sharedCore) {
	s.mu.Lock()
	s.refs--
	var last *core
	if s.refs == 0 {
		last, s.core = s.core, nil
	}
	s.mu.Unlock()
	if last != nil {
		last.close()
	}
}

// poolOptions configures the pool the Factory opens.
func (f *Factory) poolOptions() pg.PoolOptions {
	return pg.PoolOptions{MaxOpen: f.maxOpen, MaxIdle: f.maxIdle, Lifetime: f.connLifetime,
		Mode: f.mode, StatementCache: f.stmtCacheCap, Tracer: f.tracer}
}

func (f *Factory) openCore(ctx context.Context) (*core, error) {
	layout, err := schema.NewLayout(f.isolation, f.table, f.tableSchema)
	if err != nil {
		return nil, err
	}
	if err := engine.CheckExecMode(f.mode); err != nil {
		return nil, err
	}
	conns, err := f.openConns(ctx)
	if err != nil {
		return nil, err
	}
	c, err := newCore(ctx, coreConfig{
		conns: conns, layout: layout,
		opts: engine.Options{Mode: f.mode, MaxMessageSize: f.maxSize,
			MaxBytes: f.quotaBytes, MaxMessages: f.quotaMessages},
		resolver: f.resolver, lockTimeout: f.lockTimeout, cacheSize: f.cacheSize, concurrency: f.tenantConcurrency,
		observe: observerConfig{meterProvider: f.meterProvider, logger: f.logger, tenantAttr: f.tenantAttr},
	})
	if err != nil {
		conns.close()
	}
	return c, err
}

// openConns opens the Factory's pool, split into groups when affinity is
// on, or wraps the caller's pool.
func (f *Factory) openConns(ctx context.Context) (*conns, error) {
	if f.pool != nil {
		return &conns{pool: f.pool}, nil
	}
	if f.affinity == 0 {
		pool, err := pg.OpenPool(ctx, f.dsn, f.poolOptions())
		if err != nil {
			return nil, err
		}
		return &conns{pool: pool, own: true}, nil
	}
	cfg, err := pg.PoolConfig(f.dsn, f.poolOptions())
	if err != nil {
		return nil, err
	}
	groups, err := affinity.Open(ctx, cfg, f.affinity)
	if err != nil {
		return nil, fmt.Errorf("opening pool: %w", pg.ConnectionError(err))
	}
	return &conns{groups: groups, own: true}, nil
}

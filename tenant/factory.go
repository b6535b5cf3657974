package tenant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgtenant/pgtenant/backend"
	"github.com/pgtenant/pgtenant/internal/affinity"
	"github.com/pgtenant/pgtenant/internal/engine"
	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/internal/quota"
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
	// prepared statement cache in pools the Factory opens. A queue
	// tenant's cycle uses about ten statements (bodies and metadata), so
	// it holds the statements of about 400 hot tenants per connection;
	// with tenant affinity (the default) each connection serves about
	// 2/Groups of the tenants.
	DefaultStatementCacheCapacity = 4096
	// DefaultAffinity is the connections per group of tenant-affine
	// connections in pools the Factory opens in the per-tenant modes; see
	// WithConnectionAffinity. In SharedTable affinity is off by default:
	// every tenant runs the same statements there, so it saves nothing.
	DefaultAffinity = 1
	// DefaultLockTimeout bounds how long Drop waits for a tenant's locks.
	DefaultLockTimeout = 5 * time.Second
)

// Factory makes Routers (datastorage backends), metadata backends (see
// Meta) and Admins, all on one pool. It implements datastorage.Factory.
// WithX methods return a modified copy and never change the receiver;
// every copy has its own shared state, so what one Factory value opens
// shares one pool and one tenant cache, and what different Factory values
// open shares nothing. A Factory pinned by ForTenant shares its parent's;
// a WithX on it is refused (Create and Open fail), since it would need a
// pool of its own.
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
	// listenDSN, if set, is where the change listener connects.
	listenDSN string
	// viewBytes bounds the queue-state views' memory; 0: the default.
	viewBytes int64
	// metaSize bounds one message's metadata; 0: the default.
	metaSize int64

	// set names the options set with a WithX, for the checks at open:
	// options that WithPool makes meaningless, and options on a pinned
	// Factory.
	set []string

	// pinned is the tenant of a ForTenant Factory, pin whether there is
	// one, parent the options set before ForTenant.
	pinned string
	pin    bool
	parent []string

	shared *sharedCore
}

// sharedCore is the state the handles of one Factory value share: the
// core, opened by the first and closed by the last.
type sharedCore struct {
	mu      sync.Mutex
	core    *core
	refs    int
	opening chan struct{} // closed when an open in progress ends
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
		affinity:     -1, // DefaultAffinity, or off in SharedTable
		mode:         pgx.QueryExecModeCacheStatement,
		resolver:     ContextResolver,
		lockTimeout:  DefaultLockTimeout,
		shared:       &sharedCore{},
	}
}

// with returns a copy changed by change, with state of its own; option
// names the WithX.
func (f *Factory) with(option string, change func(*Factory)) *Factory {
	c := *f
	change(&c)
	c.set = append(slices.Clip(f.set), option)
	if !f.pin {
		c.shared = &sharedCore{}
	}
	return &c
}

// poolOptions are the options that configure a pool the Factory opens:
// WithPool makes them meaningless.
var poolOptions = []string{"WithConnectionLimits", "WithConnectionAffinity", "WithMaxConnLifetime",
	"WithStatementCacheCapacity", "WithQueryTracer"}

// check refuses what cannot work: options set on a pinned Factory, and
// pool options with WithPool.
func (f *Factory) check() error {
	if f.shared == nil {
		return errors.New("pgtenant: Factory not made by NewFactory")
	}
	if f.pin {
		if len(f.set) > len(f.parent) {
			return fmt.Errorf("pgtenant: %s on a Factory pinned by ForTenant: it shares its parent's pool and cache, so set options on the parent before ForTenant", f.set[len(f.parent)])
		}
		if err := Validate(f.pinned); err != nil {
			return err
		}
	}
	if f.cacheSize <= 0 {
		return fmt.Errorf("pgtenant: cache size %d must be positive", f.cacheSize)
	}
	if f.pool != nil {
		for _, o := range f.set {
			if slices.Contains(poolOptions, o) {
				return fmt.Errorf("pgtenant: %s has no effect with WithPool: configure the caller's pool instead", o)
			}
		}
	}
	return nil
}

// WithPool returns a copy that uses the caller's pool; Routers then never
// close it. The pool's own statement cache settings apply; the exec mode
// (WithExecMode) is still passed with every statement.
func (f *Factory) WithPool(pool *pgxpool.Pool) *Factory {
	return f.with("WithPool", func(c *Factory) { c.pool = pool })
}

// WithIsolation returns a copy that uses isolation mode iso.
func (f *Factory) WithIsolation(iso schema.Isolation) *Factory {
	return f.with("WithIsolation", func(c *Factory) { c.isolation = iso })
}

// WithTableName returns a copy with base table name: the table created in
// each tenant's schema (SchemaPerTenant), or the shared table (SharedTable,
// where "schema.table" is allowed). In TablePerTenant the tenants' tables
// are named after the tenants; see WithTableSchema.
func (f *Factory) WithTableName(name string) *Factory {
	return f.with("WithTableName", func(c *Factory) { c.table = name })
}

// WithTableSchema returns a copy whose TablePerTenant tables live in schema
// name (default "public").
func (f *Factory) WithTableSchema(name string) *Factory {
	return f.with("WithTableSchema", func(c *Factory) { c.tableSchema = name })
}

// WithConnectionLimits returns a copy whose pool has at most maxOpen
// connections and keeps maxIdle open. With WithPool it is refused.
func (f *Factory) WithConnectionLimits(maxOpen, maxIdle int) *Factory {
	return f.with("WithConnectionLimits", func(c *Factory) { c.maxOpen, c.maxIdle = maxOpen, maxIdle })
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
// The default is DefaultAffinity in the per-tenant modes and off in
// SharedTable, where all tenants share statements. With WithPool it is refused (pgtenant
// cannot split a pool it does not own); it is meaningless behind a
// transaction pooler, which hands each transaction to any server
// connection.
func (f *Factory) WithConnectionAffinity(connsPerGroup int) *Factory {
	return f.with("WithConnectionAffinity", func(c *Factory) { c.affinity = max(connsPerGroup, 0) })
}

// WithMaxConnLifetime returns a copy whose pool closes each connection
// after d (±10%), which frees the server backend's caches: every backend
// keeps catalog and relation cache entries for each tenant it touched
// (about 30 KiB per tenant in the per-tenant modes) and the plans of its
// prepared statements (about 15 KiB each); see the README, "Scale limits".
// The default is backend.DefaultMaxConnLifetime, or the DSN's
// pool_max_conn_lifetime; d <= 0 keeps the default. With WithPool it is
// refused.
func (f *Factory) WithMaxConnLifetime(d time.Duration) *Factory {
	return f.with("WithMaxConnLifetime", func(c *Factory) { c.connLifetime = d })
}

// WithListenDSN returns a copy whose change listener connects to dsn
// instead of the Factory's own DSN or pool. The listener (one connection,
// outside the pool, opened by the first metadata backend) hears which
// tenants other hosts changed, so that idle queues can be scanned from
// memory. Notifications do not pass a transaction pooler such as
// PgBouncer: behind one, give the server's direct address here. Without
// it, pgtenant notices that its probes never arrive, logs a warning, and
// every metadata scan reads the database.
func (f *Factory) WithListenDSN(dsn string) *Factory {
	return f.with("WithListenDSN", func(c *Factory) { c.listenDSN = dsn })
}

// WithViewMemory returns a copy whose queue-state views (see
// MetaBackend.NewMessageIterator) hold at most n bytes in all; the least
// recently scanned tenants' views go first. The default is 64 MiB; one
// tenant's view holds at most 2 MiB and 1 000 messages per state.
func (f *Factory) WithViewMemory(n int64) *Factory {
	return f.with("WithViewMemory", func(c *Factory) { c.viewBytes = n })
}

// WithCacheSize returns a copy whose LRU remembers n tenants (default
// DefaultCacheSize). An evicted tenant costs one cheap check on its next
// write.
func (f *Factory) WithCacheSize(n int) *Factory {
	return f.with("WithCacheSize", func(c *Factory) { c.cacheSize = n })
}

// WithResolver returns a copy that finds tenants with r instead of
// FromContext.
func (f *Factory) WithResolver(r Resolver) *Factory {
	return f.with("WithResolver", func(c *Factory) { c.resolver = r })
}

// WithExecMode returns a copy that sends statements in mode m. The default,
// pgx.QueryExecModeCacheStatement, prepares each tenant's statements once
// per connection; pgx.QueryExecModeCacheDescribe prepares nothing on the
// server (use it behind PgBouncer in transaction mode). The text modes are
// refused: they hex-encode BYTEA.
func (f *Factory) WithExecMode(m pgx.QueryExecMode) *Factory {
	return f.with("WithExecMode", func(c *Factory) { c.mode = m })
}

// WithStatementCacheCapacity returns a copy whose pool caches n statements
// per connection (default DefaultStatementCacheCapacity; pgx's own
// default is 512). With WithPool it is refused.
func (f *Factory) WithStatementCacheCapacity(n int) *Factory {
	return f.with("WithStatementCacheCapacity", func(c *Factory) { c.stmtCacheCap = n })
}

// WithLockTimeout returns a copy whose Drop waits at most d for a tenant's
// locks (default DefaultLockTimeout).
func (f *Factory) WithLockTimeout(d time.Duration) *Factory {
	return f.with("WithLockTimeout", func(c *Factory) { c.lockTimeout = d })
}

// WithMaxMetadataSize returns a copy that refuses a message's metadata
// (its ID, LastError, RetryPolicyName and headers together) over n bytes
// with ErrTooLarge, before any SQL runs (default 1 MiB). Metadata is not
// counted by WithQuota; this bounds it per message.
func (f *Factory) WithMaxMetadataSize(n int64) *Factory {
	return f.with("WithMaxMetadataSize", func(c *Factory) { c.metaSize = n })
}

// WithMaxMessageSize returns a copy that refuses bodies over n bytes with
// ErrTooLarge, counted as they arrive (default
// backend.DefaultMaxMessageSize, 512 MiB).
func (f *Factory) WithMaxMessageSize(n int64) *Factory {
	return f.with("WithMaxMessageSize", func(c *Factory) { c.maxSize = n })
}

// WithTenantConcurrency returns a copy that lets at most n operations of
// one tenant run at once (0, the default, means no limit), so that one busy
// tenant cannot take every pooled connection. A call over the limit waits
// for a place, or for its context to end. An open reader or writer holds its
// place until Close.
func (f *Factory) WithTenantConcurrency(n int) *Factory {
	return f.with("WithTenantConcurrency", func(c *Factory) { c.tenantConcurrency = n })
}

// WithQuota returns a copy that bounds each tenant's stored body bytes and
// number of bodies (0: no bound). A write that would exceed either fails
// with a *QuotaError (errors.Is ErrQuotaExceeded) and stores nothing. The
// bounds are exact, across hosts and under concurrent writes: the tenant's
// usage is kept in its registry row, which every write and delete locks
// for the time of one statement (one round trip). Metadata does not count:
// each message's metadata is bounded by WithMaxMetadataSize instead. All
// hosts of a store must use the same quota.
func (f *Factory) WithQuota(maxBytes, maxMessages int64) *Factory {
	return f.with("WithQuota", func(c *Factory) { c.quotaBytes, c.quotaMessages = maxBytes, maxMessages })
}

// WithMeterProvider returns a copy that records OpenTelemetry metrics
// through mp (default: none). See the README for the instruments.
func (f *Factory) WithMeterProvider(mp metric.MeterProvider) *Factory {
	return f.with("WithMeterProvider", func(c *Factory) { c.meterProvider = mp })
}

// WithTenantAttribute returns a copy that adds the tenant id as the
// "tenant" attribute to per-tenant metrics. Off by default: with many
// tenants it multiplies the number of time series.
func (f *Factory) WithTenantAttribute(on bool) *Factory {
	return f.with("WithTenantAttribute", func(c *Factory) { c.tenantAttr = on })
}

// WithLogger returns a copy that logs through l: tenant creation and
// failures to ensure one (Debug, Warn), Provision, Drop and MigrateAll
// (Info). Silent by default.
func (f *Factory) WithLogger(l *slog.Logger) *Factory {
	return f.with("WithLogger", func(c *Factory) { c.logger = l })
}

// WithQueryTracer returns a copy whose pool traces queries with t (for
// example OpenTelemetry's tracer for pgx). With WithPool it is refused:
// set the tracer on that pool's configuration instead.
func (f *Factory) WithQueryTracer(t pgx.QueryTracer) *Factory {
	return f.with("WithQueryTracer", func(c *Factory) { c.tracer = t })
}

// ForTenant returns a Factory pinned to tenant id that shares f's pool and
// tenant cache: Routers and metadata backends made from it (Create, Meta)
// never open another pool, and the pool closes when the last of all of
// them closes. They serve only tenant id: a context without a tenant uses
// id, a context naming another tenant is refused with a
// *TenantMismatchError (nothing is read or written), and an invalid id
// fails Create with ErrInvalidTenant. This is how a queue host runs one
// RetrySpool queue per tenant on one pool; see the README, "Running a
// queue host".
//
// ForTenant leaves f unchanged. A WithX on the pinned Factory is refused
// when it is opened: set options on f before ForTenant.
func (f *Factory) ForTenant(id string) *Factory {
	c := *f
	c.pinned, c.pin = id, true
	c.parent = slices.Clip(f.set)
	return &c
}

// Name returns "pgtenant".
func (f *Factory) Name() string { return "pgtenant" }

// openTimeout bounds Create's connection and set-up, as in RetrySpool's
// Create methods, which take no context.
const openTimeout = 30 * time.Second

// Create returns a new Router as a datastorage.Backend, waiting at most
// 30 s for the pool and the store's set-up; Open takes a context.
func (f *Factory) Create() (datastorage.Backend, error) {
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	return f.Open(ctx)
}

// Open returns a new Router. The first Router, metadata backend or Admin
// of a Factory value opens the pool (unless WithPool) and sets up the
// store (the registry, and in SharedTable the shared tables); later ones
// share them, and the last to close closes the pool. A host keeps one of
// them open for as long as it serves tenants (an Admin, say): opening the
// pool again costs a connection and a set-up check.
func (f *Factory) Open(ctx context.Context) (*Router, error) {
	h, err := f.open(ctx)
	if err != nil {
		return nil, err
	}
	return &Router{h: h}, nil
}

// OpenAdmin returns an Admin of the Factory's store. It is refused on a
// Factory pinned by ForTenant: administration names its tenants.
func (f *Factory) OpenAdmin(ctx context.Context) (*Admin, error) {
	if f.pin {
		return nil, errors.New("pgtenant: OpenAdmin on a Factory pinned by ForTenant: open it on the parent Factory")
	}
	h, err := f.open(ctx)
	if err != nil {
		return nil, err
	}
	return &Admin{h: h}, nil
}

// open returns a handle on the Factory's core, opening the core if none
// is open. Callers that arrive while another opens it wait for that, or
// for their own context to end.
func (f *Factory) open(ctx context.Context) (*handle, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	s := f.shared
	for {
		s.mu.Lock()
		if s.core != nil {
			s.refs++
			c := s.core
			s.mu.Unlock()
			return &handle{core: c, pinned: f.pinned, release: func() { s.release() }}, nil
		}
		if wait := s.opening; wait != nil {
			s.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
		}
		done := make(chan struct{})
		s.opening = done
		s.mu.Unlock()
		c, err := f.openCore(ctx)
		s.mu.Lock()
		s.opening = nil
		if err == nil {
			s.core, s.refs = c, s.refs+1
		}
		s.mu.Unlock()
		close(done)
		if err != nil {
			return nil, err
		}
		return &handle{core: c, pinned: f.pinned, release: func() { s.release() }}, nil
	}
}

// release gives back one handle's reference; the last one closes the
// core, outside the lock, so that opening meanwhile never waits for a pool
// to close.
func (s *sharedCore) release() {
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
		Mode: f.mode, StatementCache: f.stmtCacheCap, Tracer: f.tracer,
		GenericPlans: f.mode == pgx.QueryExecModeCacheStatement}
}

func (f *Factory) openCore(ctx context.Context) (*core, error) {
	layout, err := schema.NewLayout(f.isolation, f.table, f.tableSchema)
	if err != nil {
		return nil, err
	}
	if err := engine.CheckExecMode(f.mode); err != nil {
		return nil, err
	}
	listen, err := f.listenConfig()
	if err != nil {
		return nil, err
	}
	conns, err := f.openConns(ctx)
	if err != nil {
		return nil, err
	}
	if listen == nil {
		listen = conns.config().ConnConfig.Copy()
		if listen.RuntimeParams["application_name"] == "" {
			listen.RuntimeParams["application_name"] = listenerName
		}
	}
	c, err := newCore(ctx, coreConfig{listen: listen, viewBytes: f.viewBytes, dsnEmpty: f.dsn == "" && f.pool == nil,
		conns: conns, layout: layout,
		opts: engine.Options{Mode: f.mode, MaxMessageSize: f.maxSize,
			Quota: quota.Limits{Bytes: f.quotaBytes, Messages: f.quotaMessages}},
		metaSize: f.metaSize,
		resolver: f.resolver, lockTimeout: f.lockTimeout, cacheSize: f.cacheSize, concurrency: f.tenantConcurrency,
		observe: observerConfig{meterProvider: f.meterProvider, logger: f.logger, tenantAttr: f.tenantAttr},
	})
	if err != nil {
		conns.close()
	}
	return c, err
}

// listenerName is the application_name of the change listener's
// connection, unless the DSN names one.
const listenerName = "pgtenant-listener"

// listenConfig parses WithListenDSN's DSN; nil without one.
func (f *Factory) listenConfig() (*pgx.ConnConfig, error) {
	if f.listenDSN == "" {
		return nil, nil
	}
	cfg, err := pgx.ParseConfig(f.listenDSN)
	if err != nil {
		return nil, fmt.Errorf("pgtenant: WithListenDSN: %w", err)
	}
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = listenerName
	}
	return cfg, nil
}

// openConns opens the Factory's pool, split into groups when affinity is
// on, or wraps the caller's pool.
func (f *Factory) openConns(ctx context.Context) (*conns, error) {
	if f.pool != nil {
		// Pipelines (a write and its clean-up, quota'd writes) run in the
		// pool's own default mode.
		if err := engine.CheckExecMode(f.pool.Config().ConnConfig.DefaultQueryExecMode); err != nil {
			return nil, fmt.Errorf("WithPool: the pool's default exec mode: %w", err)
		}
		return &conns{pool: f.pool}, nil
	}
	aff := f.affinity
	if aff < 0 {
		aff = DefaultAffinity
		if f.isolation == SharedTable {
			aff = 0
		}
	}
	if aff == 0 {
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
	groups, err := affinity.Open(ctx, cfg, aff)
	if err != nil {
		return nil, fmt.Errorf("opening pool: %w", pg.ConnectionError(err))
	}
	return &conns{groups: groups, own: true}, nil
}

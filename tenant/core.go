package tenant

import (
	"context"
	"errors"
	"fmt"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/internal/changes"
	"github.com/pgtenant/pgtenant/internal/engine"
	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/internal/quota"
	"github.com/pgtenant/pgtenant/internal/registry"
	"github.com/pgtenant/pgtenant/schema"
)

// core is what the Routers, metadata backends and Admins of one Factory
// value share: the pool, the registry of the layout, the cache of ensured
// tenants, the in-process ensure-once, the limiter, the change hub. It
// composes the registry (where tenants live), the engine (how bytes move)
// and the hub (who changed what); it runs no SQL of its own.
type core struct {
	conns    *conns
	reg      *registry.Registry
	opts     engine.Options
	metaSize int64
	resolver Resolver

	// ensured holds the tenants whose objects are known to exist at the
	// current version and that were active when checked, with their
	// compiled statements.
	ensured *lru.Cache[string, *entry]
	once    pg.Once[registry.Record]
	limit   *limiter
	obs     *observer
	// hub announces this host's changes of tenants, hears the other
	// hosts', and keeps the queue-state views that depend on them.
	hub *changes.Hub
}

// entry is one tenant's compiled statements: its message bodies and its
// messages' metadata.
type entry struct {
	data *engine.Store
	meta *engine.MetaStore
}

// coreConfig is what a core is made of; the Factory fills it.
type coreConfig struct {
	conns       *conns
	layout      schema.Layout
	opts        engine.Options
	metaSize    int64
	resolver    Resolver
	lockTimeout time.Duration
	cacheSize   int
	concurrency int
	observe     observerConfig
	// listen configures the change listener's connection.
	listen *pgx.ConnConfig
	// viewBytes bounds the memory of the queue-state views.
	viewBytes int64
	// dsnEmpty says that the Factory was given no DSN.
	dsnEmpty bool
}

func newCore(ctx context.Context, cfg coreConfig) (*core, error) {
	// Check the exec mode before anything else is made.
	if err := engine.CheckExecMode(cfg.opts.Mode); err != nil {
		return nil, err
	}
	if cfg.cacheSize <= 0 {
		return nil, fmt.Errorf("pgtenant: cache size %d must be positive", cfg.cacheSize)
	}
	reg, err := registry.New(cfg.conns.shared(), cfg.layout, cfg.lockTimeout)
	if err != nil {
		return nil, err
	}
	obs, err := newObserver(cfg.observe, cfg.conns.stat)
	if err != nil {
		return nil, err
	}
	c := &core{conns: cfg.conns, reg: reg, opts: cfg.opts, metaSize: cfg.metaSize, resolver: cfg.resolver,
		limit: newLimiter(cfg.concurrency), obs: obs}
	c.ensured, err = lru.NewWithEvict(cfg.cacheSize, func(id string, _ *entry) {
		obs.cacheEvicts.Add(context.Background(), 1, obs.attrs(id))
	})
	if err != nil {
		obs.close()
		return nil, err
	}
	c.hub = changes.New(changes.Config{Notify: cfg.conns.shared(), Listen: cfg.listen, Store: reg.Store(),
		Bytes: cfg.viewBytes, Log: obs.log})
	if err := reg.Setup(ctx); err != nil {
		c.hub.Close()
		obs.close()
		if err := pg.ConnectFailure(&cfg.conns.config().ConnConfig.Config, cfg.dsnEmpty, err); errors.Is(err, pg.ErrConnection) {
			return nil, err
		}
		return nil, fmt.Errorf("setting up the %s store: %w", reg.Store(), pg.Classify(err))
	}
	return c, nil
}

// close stops the hub, waits for work shared by callers (creations under
// the ensure-once), and closes the pool. The tenant cache is left to the
// garbage collector: evicting it would count every tenant as evicted.
func (c *core) close() {
	c.hub.Close()
	c.once.Close()
	c.obs.close()
	c.conns.close()
}

// compile returns the statements of the tenant placed at p without
// touching the database. Every statement carries the registry's guard, so
// a tombstoned tenant has no data and takes no write on any host, whether
// or not its drop finished; quota'd writes keep their usage in the
// tenant's registry row.
func (c *core) compile(id string, p schema.Placement) (*entry, error) {
	store, tenant := c.reg.GuardArgs(id)
	g := registry.GuardsOf(p)
	t := engine.Target{Table: p.Table, Partition: p.Partition,
		Guard: &engine.Guard{Read: g.Read, Write: g.Write, Insert: g.Insert, Key: g.Key, Store: store, Tenant: tenant}}
	db := c.conns.forTenant(id)
	data, err := engine.NewStore(db, t, c.opts)
	if err != nil {
		return nil, err
	}
	meta, err := engine.NewMetaStore(db, t, c.opts.Mode, c.metaSize)
	if err != nil {
		return nil, err
	}
	return &entry{data: data, meta: meta}, nil
}

// reading returns the statements for a call that must create nothing:
// cached, or, for a tenant this process has not cached, from its registry
// row. A tenant whose objects are ready is cached; an active tenant of an
// older version is migrated first (so that its objects have the layout
// the statements expect); a tenant without a row, tombstoned, or whose
// objects are gone gets statements that find nothing.
func (c *core) reading(ctx context.Context, id string) (*entry, error) {
	if e, ok := c.ensured.Get(id); ok {
		return e, nil
	}
	rec, found, ready, err := c.reg.Check(ctx, id)
	switch {
	case err != nil:
		return nil, err
	case ready:
		return c.keep(id, rec.Placement)
	case found && rec.State == registry.Active && rec.Version < schema.CurrentVersion:
		return c.ensure(ctx, id, false)
	case found:
		return c.compile(id, rec.Placement)
	}
	p, err := c.reg.Layout().Place(id)
	if err != nil {
		return nil, err
	}
	return c.compile(id, p)
}

// keep compiles and caches tenant id's statements for placement p.
func (c *core) keep(id string, p schema.Placement) (*entry, error) {
	e, err := c.compile(id, p)
	if err != nil {
		return nil, err
	}
	c.ensured.Add(id, e)
	return e, nil
}

// claimAttempts bounds the tries of a tenant's creation (see pg.Retry).
const claimAttempts = 6

// ensure returns the statements of tenant id after making sure its objects
// exist at the current version and it is active. A tombstoned tenant
// gives ErrTenantDeleted, unless provision is true, which makes it active
// again (empty).
func (c *core) ensure(ctx context.Context, id string, provision bool) (*entry, error) {
	if !provision {
		if e, ok := c.ensured.Get(id); ok {
			c.obs.cacheHits.Add(ctx, 1, c.obs.attrs(id))
			return e, nil
		}
		c.obs.cacheMisses.Add(ctx, 1, c.obs.attrs(id))
	}
	start := time.Now()
	if _, err := c.reg.Layout().Place(id); err != nil {
		return nil, err
	}
	key := "write"
	if provision {
		key = "provision"
	}
	rec, err := c.once.Do(ctx, key+"\x00"+id, func(ctx context.Context) (registry.Record, error) {
		if !provision {
			if rec, ok, err := c.reg.Ready(ctx, id); err != nil || ok {
				return rec, err
			}
		}
		// A creation that hits a bound (a lock or statement timeout, a
		// deadlock, a lost connection) is tried again: a slow catalog
		// must not turn into failed Provisions.
		var rec registry.Record
		err := pg.Retry(ctx, claimAttempts, func(err error) {
			c.obs.log.WarnContext(ctx, "pgtenant: creating tenant failed, trying again", "tenant", id, "err", err)
		}, func() (err error) {
			rec, err = c.reg.Claim(ctx, id, provision)
			return err
		})
		return rec, err
	})
	var e *entry
	if err == nil {
		e, err = c.keep(id, rec.Placement)
	}
	switch {
	case errors.Is(err, registry.ErrTenantDeleted):
		err = fmt.Errorf("%w: %q", ErrTenantDeleted, id)
	case err != nil && pg.IsContextError(err):
		err = fmt.Errorf("waiting for tenant %q to be created: %w", id, err)
	case err != nil:
		err = fmt.Errorf("ensuring tenant %q: %w", id, pg.Classify(err))
	}
	c.obs.ensure(ctx, id, start, err)
	if err != nil {
		return nil, err
	}
	if provision {
		c.hub.Changed(id) // it may come back empty after a drop
	}
	return e, nil
}

// forget drops tenant id from the cache: the next call checks it again.
func (c *core) forget(id string) { c.ensured.Remove(id) }

// drop tombstones tenant id, then removes its data in a transaction of its
// own bounded by the lock timeout. Every host's views of the tenant are
// dropped after each step.
func (c *core) drop(ctx context.Context, id string) error {
	p, err := c.reg.Tombstone(ctx, id)
	c.forget(id)
	c.hub.Changed(id)
	if err != nil {
		return fmt.Errorf("tombstoning tenant %q: %w", id, err)
	}
	err = c.reg.DropObjects(ctx, id, p)
	c.forget(id)
	c.hub.Changed(id)
	if err != nil {
		return fmt.Errorf("dropping tenant %q (tombstoned; Drop again to finish): %w", id, err)
	}
	return nil
}

// writeErr maps a refused write guard onto ErrTenantDeleted and forgets
// the tenant, and a refused quota onto a *QuotaError.
func (c *core) writeErr(id string, err error) error {
	var qe *quota.Error
	switch {
	case errors.Is(err, engine.ErrGuardFailed):
		c.forget(id)
		return fmt.Errorf("%w: %q", ErrTenantDeleted, id)
	case errors.As(err, &qe):
		return &QuotaError{Tenant: id, Unit: qe.Unit, Used: qe.Used, Limit: qe.Limit}
	}
	return err
}

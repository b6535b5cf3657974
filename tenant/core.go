package tenant

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2"
	"github.com/pgtenant/pgtenant/internal/engine"
	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/internal/registry"
	"github.com/pgtenant/pgtenant/schema"
)

// core is what the Routers of one Factory value share: the pool, the
// registry of the layout, the cache of ensured tenants and the in-process
// ensure-once. It composes the registry (where tenants live) and the engine
// (how bytes move); it runs no SQL of its own.
type core struct {
	conns    *conns
	reg      *registry.Registry
	opts     engine.Options
	resolver Resolver

	// ensured holds the tenants whose objects are known to exist and that
	// were active when checked, with their compiled statements.
	ensured *lru.Cache[string, *entry]
	once    pg.Once[registry.Record]
	limit   *limiter
	obs     *observer
	// views keep small queue states of tenants in memory for metadata
	// scans; the listener tells them of other hosts' writes.
	views      *viewSet
	notifier   *engine.Notifier
	listener   *listener
	listenOnce sync.Once
}

// entry is one tenant's compiled statements: its message bodies and its
// messages' metadata.
type entry struct {
	data *engine.Store
	meta *engine.MetaStore
}

// notifyChannel is the channel of metadata change notifications; the
// payload is the store and the tenants, "store/tenant\ntenant...".
const notifyChannel = "pgtenant_meta"

// coreConfig is what a core is made of; the Factory fills it.
type coreConfig struct {
	conns       *conns
	layout      schema.Layout
	opts        engine.Options
	resolver    Resolver
	lockTimeout time.Duration
	cacheSize   int
	concurrency int
	observe     observerConfig
}

func newCore(ctx context.Context, cfg coreConfig) (*core, error) {
	// Check the exec mode before anything else is made.
	if err := engine.CheckExecMode(cfg.opts.Mode); err != nil {
		return nil, err
	}
	if cfg.cacheSize <= 0 {
		return nil, fmt.Errorf("pgtenant: cache size %d must be positive", cfg.cacheSize)
	}
	obs, err := newObserver(cfg.observe, cfg.conns.stat)
	if err != nil {
		return nil, err
	}
	cache, err := lru.NewWithEvict(cfg.cacheSize, func(id string, _ *entry) {
		obs.cacheEvicts.Add(context.Background(), 1, obs.attrs(id))
	})
	if err != nil {
		obs.close()
		return nil, err
	}
	c := &core{
		conns: cfg.conns, reg: registry.New(cfg.conns.shared(), cfg.layout, cfg.lockTimeout),
		opts: cfg.opts, resolver: cfg.resolver, ensured: cache, limit: newLimiter(cfg.concurrency), obs: obs,
		views: newViewSet(),
	}
	c.notifier = engine.NewNotifier(cfg.conns.shared(), notifyChannel, c.reg.Store()+"/", func(err error) {
		obs.log.Warn("pgtenant: a metadata change notification failed; other hosts see the change within "+maxViewAge.String(), "err", err)
	})
	if err := c.reg.Setup(ctx); err != nil {
		obs.close()
		return nil, fmt.Errorf("setting up %s: %w", c.reg.Store(), pg.Classify(err))
	}
	return c, nil
}

func (c *core) close() {
	if c.listener != nil {
		c.listener.stop()
	}
	c.notifier.Close()
	c.obs.close()
	c.ensured.Purge()
	c.conns.close()
}

// compile returns the statements of the tenant placed at p without
// touching the database. Every statement carries the registry's guard, so
// a tombstoned tenant has no data and takes no write on any host, whether
// or not its drop finished; writes keep their usage in the tenant's
// registry row.
func (c *core) compile(id string, p schema.Placement) (*entry, error) {
	args := c.reg.GuardArgs(id)
	t := engine.Target{Table: p.Table, Partition: p.Partition,
		Guard:   &engine.Guard{Read: registry.ReadGuard, Write: registry.WriteGuard, Args: args},
		Account: &engine.Account{LockSQL: registry.UsageLockSQL, SetSQL: registry.UsageSetSQL, AddSQL: registry.UsageAddSQL, Args: args}}
	db := c.conns.forTenant(id)
	data, err := engine.NewStore(db, t, c.opts)
	if err != nil {
		return nil, err
	}
	meta, err := engine.NewMetaStore(db, t, c.opts.Mode)
	if err != nil {
		return nil, err
	}
	return &entry{data: data, meta: meta}, nil
}

// lookup returns the statements for reads and deletes: cached, or compiled
// from the layout.
func (c *core) lookup(id string) (*entry, error) {
	if e, ok := c.ensured.Get(id); ok {
		return e, nil
	}
	p, err := c.reg.Layout().Place(id)
	if err != nil {
		return nil, err
	}
	return c.compile(id, p)
}

// ensure returns the statements of tenant id after making sure its objects
// exist and it is active. A tombstoned tenant gives ErrTenantDeleted,
// unless provision is true, which makes it active again.
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
		return c.reg.Claim(ctx, id, provision)
	})
	var e *entry
	if err == nil {
		e, err = c.compile(id, rec.Placement)
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
	c.ensured.Add(id, e)
	return e, nil
}

// drop tombstones tenant id, then removes its data in a transaction of its
// own bounded by the lock timeout.
func (c *core) drop(ctx context.Context, id string) error {
	p, err := c.reg.Tombstone(ctx, id)
	c.ensured.Remove(id)
	if err != nil {
		return fmt.Errorf("tombstoning tenant %q: %w", id, err)
	}
	err = c.reg.DropObjects(ctx, id, p)
	c.ensured.Remove(id)
	if err != nil {
		return fmt.Errorf("dropping tenant %q (tombstoned; Drop again to finish): %w", id, err)
	}
	return nil
}

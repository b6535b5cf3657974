package tenant

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/golang-lru/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgtenant/pgtenant/backend"
	"github.com/pgtenant/pgtenant/schema"
)

// core is what the Routers of one Factory value share: the pool, the
// layout, the cache of ensured tenants and the in-process ensure-once.
type core struct {
	pool        *pgxpool.Pool
	ownPool     bool
	layout      schema.Layout
	store       string // the layout's key in the registry
	opts        backend.Options
	resolver    Resolver
	lockTimeout time.Duration

	// ensured holds the tenants whose objects are known to exist and that
	// were active when checked, with their compiled statements.
	ensured *lru.Cache[string, *backend.Store]
	once    schema.Once
	limit   *limiter
	obs     *observer
}

func newCore(ctx context.Context, pool *pgxpool.Pool, own bool, layout schema.Layout, f *Factory) (*core, error) {
	obs, err := newObserver(f.meterProvider, f.logger, f.tenantAttr, pool)
	if err != nil {
		return nil, err
	}
	cache, err := lru.NewWithEvict(f.cacheSize, func(id string, _ *backend.Store) {
		obs.cacheEvicts.Add(context.Background(), 1, obs.attrs(id))
	})
	if err != nil {
		obs.close()
		return nil, err
	}
	c := &core{
		pool: pool, ownPool: own, layout: layout, store: layout.Store(),
		opts: backend.Options{Mode: f.mode, MaxMessageSize: f.maxSize,
			MaxBytes: f.quotaBytes, MaxMessages: f.quotaMessages},
		resolver: f.resolver, lockTimeout: f.lockTimeout, ensured: cache, limit: newLimiter(f.tenantConcurrency), obs: obs,
	}
	// Check the exec mode before any SQL.
	if _, err := backend.NewStore(pool, backend.Target{Table: layout.Base}, c.opts); err != nil {
		return nil, err
	}
	if err := c.setup(ctx); err != nil {
		obs.close()
		return nil, fmt.Errorf("pgtenant: setting up %s: %w", c.store, err)
	}
	return c, nil
}

// setup creates the registry and the layout's shared objects if missing.
func (c *core) setup(ctx context.Context) error {
	var stmts []string
	if ok, err := schema.TableExists(ctx, c.pool, schema.Registry); err != nil {
		return err
	} else if !ok {
		stmts = append(stmts, schema.RegistryDDL()...)
	}
	switch c.layout.Mode {
	case schema.SharedTable:
		if ok, err := schema.TableExists(ctx, c.pool, c.layout.Base); err != nil {
			return err
		} else if !ok {
			stmts = append(stmts, schema.CreateSchemaSQL(c.layout.Base.Schema))
			stmts = append(stmts, schema.CreateTableSQL(c.layout.Base, true)...)
			stmts = append(stmts, schema.MigrationSQL(0, c.layout.Base)...)
		}
	case schema.TablePerTenant:
		stmts = append(stmts, schema.CreateSchemaSQL(c.layout.Base.Schema))
	}
	if len(stmts) == 0 {
		return nil
	}
	return schema.InTx(ctx, c.pool, "setup:"+c.store, func(tx pgx.Tx) error {
		return schema.ExecAll(ctx, tx, stmts...)
	})
}

func (c *core) close() {
	c.obs.close()
	c.ensured.Purge()
	if c.ownPool {
		c.pool.Close()
	}
}

// compile returns the Store for tenant id without touching the database.
func (c *core) compile(id string) (*backend.Store, schema.Placement, error) {
	p, err := c.layout.Place(id)
	if err != nil {
		return nil, p, err
	}
	t := backend.Target{Table: p.Table, Partition: p.Partition}
	if p.Partition != "" {
		t.Guard = &backend.Guard{SQL: schema.ActiveGuard, Args: []any{c.store, id}}
	}
	s, err := backend.NewStore(c.pool, t, c.opts)
	return s, p, err
}

// lookup returns the Store for reads and deletes: cached, or compiled.
func (c *core) lookup(id string) (*backend.Store, error) {
	if s, ok := c.ensured.Get(id); ok {
		return s, nil
	}
	s, _, err := c.compile(id)
	return s, err
}

// ensure returns the Store of tenant id after making sure its objects exist
// and it is active. A tombstoned tenant gives ErrTenantDeleted, unless
// provision is true, which makes it active again.
func (c *core) ensure(ctx context.Context, id string, provision bool) (*backend.Store, error) {
	if !provision {
		if s, ok := c.ensured.Get(id); ok {
			c.obs.cacheHits.Add(ctx, 1, c.obs.attrs(id))
			return s, nil
		}
		c.obs.cacheMisses.Add(ctx, 1, c.obs.attrs(id))
	}
	start := time.Now()
	s, p, err := c.compile(id)
	if err != nil {
		return nil, err
	}
	key := "w"
	if provision {
		key = "p"
	}
	err = c.once.Do(ctx, key+c.store+"\x00"+id, func(ctx context.Context) error {
		if !provision {
			ok, err := c.ready(ctx, id, p)
			if err != nil || ok {
				return err
			}
		}
		return schema.InTx(ctx, c.pool, "tenant:"+c.store+"\x00"+id, func(tx pgx.Tx) error {
			rec, found, err := schema.Lookup(ctx, tx, c.store, id)
			if err != nil {
				return err
			}
			if found && rec.State == schema.Deleted && !provision {
				return ErrTenantDeleted
			}
			var stmts []string
			if p.OwnSchema {
				stmts = append(stmts, schema.CreateSchemaSQL(p.Table.Schema))
			}
			if p.Partition == "" {
				// Every step is idempotent; running all of them also covers a
				// table re-created under a registry row already current.
				stmts = append(stmts, schema.CreateTableSQL(p.Table, false)...)
				stmts = append(stmts, schema.MigrationSQL(0, p.Table)...)
			}
			if len(stmts) > 0 {
				if err := schema.ExecAll(ctx, tx, stmts...); err != nil {
					return err
				}
			}
			return schema.Put(ctx, tx, c.store, id, c.layout.Mode, p.Table, schema.Active)
		})
	})
	if err != nil {
		if errors.Is(err, ErrTenantDeleted) {
			err = fmt.Errorf("%w: %q", ErrTenantDeleted, id)
		} else {
			err = fmt.Errorf("pgtenant: ensuring tenant %q: %w", id, translateRegistry(err))
		}
	}
	c.obs.ensure(ctx, id, start, err)
	if err != nil {
		return nil, err
	}
	c.ensured.Add(id, s)
	return s, nil
}

// ready is the cheap check for a tenant this process has not cached: active
// in the registry, at the current version, and its table exists. One
// statement, no transaction, no lock.
func (c *core) ready(ctx context.Context, id string, p schema.Placement) (bool, error) {
	var ok bool
	err := c.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+schema.Registry.Sanitize()+
		" WHERE store = $1 AND tenant_id = $2 AND state = 'active' AND version = $3) AND to_regclass($4) IS NOT NULL",
		c.store, id, schema.CurrentVersion, p.Table.Sanitize()).Scan(&ok)
	return ok, err
}

// translateRegistry explains a unique violation on the registry's object
// index: two tenants mapped to one object, which the name map rules out.
func translateRegistry(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "tenants_objects" {
		return fmt.Errorf("two tenants map to one object (refused): %w", err)
	}
	return err
}

// drop tombstones tenant id, then removes its data in a transaction of its
// own bounded by the lock timeout.
func (c *core) drop(ctx context.Context, id string) error {
	_, p, err := c.compile(id)
	if err != nil {
		return err
	}
	lockKey := "tenant:" + c.store + "\x00" + id
	err = schema.InTx(ctx, c.pool, lockKey, func(tx pgx.Tx) error {
		return schema.Put(ctx, tx, c.store, id, c.layout.Mode, p.Table, schema.Deleted)
	})
	c.ensured.Remove(id)
	if err != nil {
		return fmt.Errorf("pgtenant: tombstoning tenant %q: %w", id, err)
	}
	err = schema.InTx(ctx, c.pool, lockKey, func(tx pgx.Tx) error {
		if err := c.setLockTimeout(ctx, tx); err != nil {
			return err
		}
		q, cq := p.Table.Sanitize(), schema.ChunkTable(p.Table).Sanitize()
		switch {
		case p.Partition != "":
			// SHARE ROW EXCLUSIVE waits for the writes in flight (writes
			// after it see the tombstone through their guard) and, unlike
			// SHARE, is self-exclusive, so concurrent drops queue instead of
			// deadlocking on their DELETEs.
			if _, err := tx.Exec(ctx, "LOCK TABLE "+q+", "+cq+" IN SHARE ROW EXCLUSIVE MODE"); err != nil {
				return err
			}
			for _, t := range []string{cq, q} {
				if _, err := tx.Exec(ctx, "DELETE FROM "+t+" WHERE "+schema.TenantColumn+" = $1", id); err != nil {
					return err
				}
			}
			return nil
		case p.OwnSchema:
			if _, err := tx.Exec(ctx, "DROP TABLE IF EXISTS "+q+", "+cq); err != nil {
				return err
			}
			// The schema goes too unless another layout keeps a table in it.
			sp, err := tx.Begin(ctx)
			if err != nil {
				return err
			}
			if _, err := sp.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema.Quote(p.Table.Schema)); err != nil {
				var pgErr *pgconn.PgError
				if errors.As(err, &pgErr) && pgErr.Code == "2BP01" {
					return sp.Rollback(ctx)
				}
				return err
			}
			return sp.Commit(ctx)
		default:
			_, err := tx.Exec(ctx, "DROP TABLE IF EXISTS "+q+", "+cq)
			return err
		}
	})
	c.ensured.Remove(id)
	if err != nil {
		return fmt.Errorf("pgtenant: dropping tenant %q (tombstoned; Drop again to finish): %w", id, err)
	}
	return nil
}

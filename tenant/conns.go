package tenant

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgtenant/pgtenant/internal/affinity"
	"github.com/pgtenant/pgtenant/internal/pg"
)

// conns are the connections of a core: one pool, or a pool split into
// groups with tenant affinity.
type conns struct {
	pool   *pgxpool.Pool   // without affinity
	groups *affinity.Pools // with affinity
	own    bool
}

// forTenant is the database tenant id's statements run on.
func (c *conns) forTenant(id string) pg.DB {
	if c.groups != nil {
		return c.groups.For(id)
	}
	return c.pool
}

// shared is the database of statements of no tenant in particular.
func (c *conns) shared() pg.DB {
	if c.groups != nil {
		return c.groups.Shared()
	}
	return c.pool
}

// config is the pool's configuration (a group's, with affinity).
func (c *conns) config() *pgxpool.Config {
	if c.groups != nil {
		return c.groups.Config()
	}
	return c.pool.Config()
}

// stat sums the connections' statistics.
func (c *conns) stat() affinity.Stat {
	if c.groups != nil {
		return c.groups.Stat()
	}
	s := c.pool.Stat()
	return affinity.Stat{MaxConns: s.MaxConns(), TotalConns: s.TotalConns(), AcquiredConns: s.AcquiredConns(),
		IdleConns: s.IdleConns(), EmptyAcquireCount: s.EmptyAcquireCount(), AcquireDuration: s.AcquireDuration()}
}

// close closes what the core opened.
func (c *conns) close() {
	if !c.own {
		return
	}
	if c.groups != nil {
		c.groups.Close()
	} else {
		c.pool.Close()
	}
}

package pg

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Pool defaults.
const (
	// DefaultMaxOpen and DefaultMaxIdle are the pool's MaxConns and
	// MinConns unless set.
	DefaultMaxOpen = 25
	DefaultMaxIdle = 5
	// DefaultMaxConnLifetime recycles pooled connections so that each
	// server backend's catalog cache, which grows with every table it
	// touches, is bounded.
	DefaultMaxConnLifetime = 15 * time.Minute
	// DefaultMaxConnIdleTime closes connections idle that long, beyond the
	// MinConns that are kept.
	DefaultMaxConnIdleTime = 5 * time.Minute
)

// PoolOptions configure a pool that pgtenant opens.
type PoolOptions struct {
	// MaxOpen and MaxIdle are MaxConns and MinConns (at most MaxOpen);
	// non-positive MaxOpen means DefaultMaxOpen.
	MaxOpen, MaxIdle int
	// Lifetime, if positive, replaces the lifetime (with 10% jitter).
	Lifetime time.Duration
	// Mode, if not zero, is the connections' default exec mode.
	Mode pgx.QueryExecMode
	// StatementCache, if positive, sizes pgx's per-connection statement
	// and description caches.
	StatementCache int
	// Tracer, if not nil, traces every query.
	Tracer pgx.QueryTracer
	// GenericPlans runs GenericPlansSQL on each new connection unless the
	// DSN sets plan_cache_mode.
	GenericPlans bool
}

// GenericPlansSQL sets plan_cache_mode = force_generic_plan for the
// session, except on a Citus coordinator. pgtenant's statements look rows
// up by key, where a custom plan (the server plans each prepared statement
// afresh for its first five executions on each connection) buys nothing
// but planning time: with many tenants every connection prepares each of
// its tenants' statements, so those custom plans are much of the warm-up
// after connections are opened or recycled. Citus cannot route a generic
// plan of an INSERT ... SELECT with parameters ("could not create
// distributed plan"), so there the mode stays auto. It is a session
// setting made on connect, not a startup parameter, which PgBouncer would
// refuse.
const GenericPlansSQL = `SELECT pg_catalog.set_config('plan_cache_mode', CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_extension
WHERE extname OPERATOR(pg_catalog.=) 'citus') THEN 'auto' ELSE 'force_generic_plan' END, false)`

// PoolConfig parses dsn into a pool configuration with pgtenant's defaults:
// MaxConns = o.MaxOpen, MinConns = o.MaxIdle, MaxConnLifetime =
// DefaultMaxConnLifetime (with 10% jitter), MaxConnIdleTime =
// DefaultMaxConnIdleTime, except where the DSN sets them
// (pool_max_conn_lifetime, pool_max_conn_lifetime_jitter,
// pool_max_conn_idle_time) or o says otherwise.
func PoolConfig(dsn string, o PoolOptions) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parsing dsn: %w", err)
	}
	maxOpen := o.MaxOpen
	if maxOpen <= 0 {
		maxOpen = DefaultMaxOpen
	}
	cfg.MaxConns = int32(maxOpen)
	cfg.MinConns = int32(min(max(o.MaxIdle, 0), maxOpen))
	if !dsnSets(dsn, "pool_max_conn_lifetime") {
		cfg.MaxConnLifetime = DefaultMaxConnLifetime
	}
	if !dsnSets(dsn, "pool_max_conn_lifetime_jitter") {
		cfg.MaxConnLifetimeJitter = cfg.MaxConnLifetime / 10
	}
	if !dsnSets(dsn, "pool_max_conn_idle_time") {
		cfg.MaxConnIdleTime = DefaultMaxConnIdleTime
	}
	if o.Lifetime > 0 {
		cfg.MaxConnLifetime, cfg.MaxConnLifetimeJitter = o.Lifetime, o.Lifetime/10
	}
	if o.Mode != 0 {
		cfg.ConnConfig.DefaultQueryExecMode = o.Mode
	}
	if o.StatementCache > 0 {
		cfg.ConnConfig.StatementCacheCapacity = o.StatementCache
		cfg.ConnConfig.DescriptionCacheCapacity = o.StatementCache
	}
	if o.Tracer != nil {
		cfg.ConnConfig.Tracer = o.Tracer
	}
	if _, set := cfg.ConnConfig.RuntimeParams["plan_cache_mode"]; o.GenericPlans && !set {
		prev := cfg.AfterConnect
		cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
			if prev != nil {
				if err := prev(ctx, conn); err != nil {
					return err
				}
			}
			_, err := conn.Exec(ctx, GenericPlansSQL, pgx.QueryExecModeSimpleProtocol)
			return err
		}
	}
	return cfg, nil
}

// OpenPool opens a pool on dsn configured by PoolConfig.
func OpenPool(ctx context.Context, dsn string, o PoolOptions) (*pgxpool.Pool, error) {
	cfg, err := PoolConfig(dsn, o)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening pool: %w", ConnectionError(err))
	}
	return pool, nil
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

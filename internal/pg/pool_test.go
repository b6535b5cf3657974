package pg

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestPoolConfigLimits(t *testing.T) {
	cfg, err := PoolConfig("postgres://u@h/db", PoolOptions{MaxOpen: 7, MaxIdle: 9})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxConns != 7 || cfg.MinConns != 7 || cfg.MaxConnLifetime != DefaultMaxConnLifetime {
		t.Errorf("MaxConns %d MinConns %d lifetime %v", cfg.MaxConns, cfg.MinConns, cfg.MaxConnLifetime)
	}
	cfg, err = PoolConfig("postgres://u@h/db", PoolOptions{Lifetime: 3 * time.Minute, Mode: pgx.QueryExecModeCacheDescribe, StatementCache: 99})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxConns != DefaultMaxOpen || cfg.MaxConnLifetime != 3*time.Minute || cfg.MaxConnLifetimeJitter != 18*time.Second ||
		cfg.ConnConfig.DefaultQueryExecMode != pgx.QueryExecModeCacheDescribe || cfg.ConnConfig.StatementCacheCapacity != 99 {
		t.Errorf("options not applied: %+v", cfg)
	}
	if _, err := PoolConfig("::bad::", PoolOptions{}); err == nil {
		t.Error("bad dsn accepted")
	}
}

func TestPoolConfigKeepsDSNLifetimes(t *testing.T) {
	for _, tc := range []struct {
		dsn            string
		lifetime, idle time.Duration
	}{
		{"postgres://u@h/db", DefaultMaxConnLifetime, DefaultMaxConnIdleTime},
		{"postgres://u@h/db?pool_max_conn_lifetime=2m", 2 * time.Minute, DefaultMaxConnIdleTime},
		{"postgresql://u@h/db?pool_max_conn_idle_time=30s", DefaultMaxConnLifetime, 30 * time.Second},
		{"host=h user=u pool_max_conn_lifetime=90s", 90 * time.Second, DefaultMaxConnIdleTime},
		{"host=h user=u password='pool_max_conn_lifetime=1s'", DefaultMaxConnLifetime, DefaultMaxConnIdleTime},
	} {
		cfg, err := PoolConfig(tc.dsn, PoolOptions{MaxOpen: 4, MaxIdle: 1})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.MaxConnLifetime != tc.lifetime || cfg.MaxConnIdleTime != tc.idle || cfg.MaxConnLifetimeJitter != tc.lifetime/10 {
			t.Errorf("%s: lifetime %v (jitter %v), idle %v; want %v, %v", tc.dsn, cfg.MaxConnLifetime,
				cfg.MaxConnLifetimeJitter, cfg.MaxConnIdleTime, tc.lifetime, tc.idle)
		}
	}
}

package backend

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestWithReturnsCopies(t *testing.T) {
	base := NewFactory("postgres://x")
	named := base.WithTableName("other")
	limited := named.WithConnectionLimits(3, 1)
	moded := limited.WithExecMode(pgx.QueryExecModeCacheDescribe)
	if base.table != DefaultTableName || base.maxOpen != DefaultMaxOpen || base.mode != pgx.QueryExecModeCacheStatement {
		t.Errorf("base changed: %+v", base)
	}
	if named.table != "other" || named.maxOpen != DefaultMaxOpen {
		t.Errorf("named: %+v", named)
	}
	if limited.maxOpen != 3 || limited.maxIdle != 1 || limited.mode != pgx.QueryExecModeCacheStatement {
		t.Errorf("limited: %+v", limited)
	}
	if moded.mode != pgx.QueryExecModeCacheDescribe || moded.table != "other" {
		t.Errorf("moded: %+v", moded)
	}
}

func TestPoolConfigLimits(t *testing.T) {
	cfg, err := PoolConfig("postgres://u@h/db", 7, 9)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxConns != 7 || cfg.MinConns != 7 || cfg.MaxConnLifetime != DefaultMaxConnLifetime {
		t.Errorf("MaxConns %d MinConns %d lifetime %v", cfg.MaxConns, cfg.MinConns, cfg.MaxConnLifetime)
	}
	if _, err := PoolConfig("::bad::", 1, 1); err == nil {
		t.Error("bad dsn accepted")
	}
}

func TestValidateMessageID(t *testing.T) {
	for id, ok := range map[string]bool{"a": true, "": false, string(make([]byte, 255)): false, "x\x00": false, "\xc3": false} {
		if err := ValidateMessageID(id); (err == nil) != ok {
			t.Errorf("ValidateMessageID(%q) = %v", id, err)
		}
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
		cfg, err := PoolConfig(tc.dsn, 4, 1)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.MaxConnLifetime != tc.lifetime || cfg.MaxConnIdleTime != tc.idle || cfg.MaxConnLifetimeJitter != tc.lifetime/10 {
			t.Errorf("%s: lifetime %v (jitter %v), idle %v; want %v, %v", tc.dsn, cfg.MaxConnLifetime,
				cfg.MaxConnLifetimeJitter, cfg.MaxConnIdleTime, tc.lifetime, tc.idle)
		}
	}
}

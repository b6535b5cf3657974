package backend

import (
	"testing"

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

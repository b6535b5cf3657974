package backend

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestWithReturnsCopies(t *testing.T) {
	base := NewFactory("postgres://x")
	named := base.WithTableName("other")
	limited := named.WithConnectionLimits(3, 1)
	moded := limited.WithExecMode(pgx.QueryExecModeCacheDescribe)
	sized := moded.WithMaxMessageSize(10)
	if base.table != DefaultTableName || base.maxOpen != DefaultMaxOpen || base.mode != pgx.QueryExecModeCacheStatement || base.maxSize != 0 {
		t.Errorf("base changed: %+v", base)
	}
	if named.table != "other" || named.maxOpen != DefaultMaxOpen {
		t.Errorf("named: %+v", named)
	}
	if limited.maxOpen != 3 || limited.maxIdle != 1 || limited.mode != pgx.QueryExecModeCacheStatement {
		t.Errorf("limited: %+v", limited)
	}
	if moded.mode != pgx.QueryExecModeCacheDescribe || moded.table != "other" || moded.maxSize != 0 {
		t.Errorf("moded: %+v", moded)
	}
	if sized.maxSize != 10 || sized.mode != pgx.QueryExecModeCacheDescribe {
		t.Errorf("sized: %+v", sized)
	}
}

func TestValidateMessageID(t *testing.T) {
	for id, ok := range map[string]bool{
		"a": true, "": false, string(make([]byte, 256)): false, "x\x00": false, "\xc3": false,
		string(make([]byte, 255)): false, // 255 NUL bytes: the NUL rule
	} {
		if err := ValidateMessageID(id); (err == nil) != ok {
			t.Errorf("ValidateMessageID(%q) = %v", id, err)
		}
	}
	long := make([]byte, MaxMessageIDLength+1)
	for i := range long {
		long[i] = 'x'
	}
	if err := ValidateMessageID(string(long[:MaxMessageIDLength])); err != nil {
		t.Errorf("255 bytes refused: %v", err)
	}
	if err := ValidateMessageID(string(long)); err == nil {
		t.Error("256 bytes accepted")
	}
}

// TestConnectFailureSaysWhatToCheck opens a Backend whose server cannot be
// reached: one sentence naming the address and database, still
// ErrConnection.
func TestConnectFailureSaysWhatToCheck(t *testing.T) {
	_, err := NewFactory("postgres://alice@127.0.0.1:1/shop?connect_timeout=5").Open(context.Background())
	msg := fmt.Sprint(err)
	if !errors.Is(err, ErrConnection) || strings.Count(msg, "pgtenant:") != 1 ||
		!strings.Contains(msg, `cannot connect to PostgreSQL at 127.0.0.1:1 (database "shop", user "alice"): connection refused; check`) {
		t.Fatalf("Open = %v", err)
	}
}

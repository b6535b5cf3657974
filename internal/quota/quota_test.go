package quota

import (
	"errors"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	l := Limits{Bytes: 100, Messages: 3}
	cases := []struct {
		bytes, messages int64
		unit            string // "" when allowed
	}{
		{100, 3, ""},
		{101, 3, "bytes"},
		{50, 4, "messages"},
		{500, 9, "messages"}, // messages are checked first
	}
	for _, c := range cases {
		err := l.Check(c.bytes, c.messages)
		var qe *Error
		switch {
		case c.unit == "" && err != nil:
			t.Errorf("Check(%d, %d) = %v, want nil", c.bytes, c.messages, err)
		case c.unit != "" && (!errors.As(err, &qe) || qe.Unit != c.unit || !errors.Is(err, ErrExceeded)):
			t.Errorf("Check(%d, %d) = %v, want a %s Error", c.bytes, c.messages, err, c.unit)
		}
	}
	if err := (Limits{}).Check(1<<62, 1<<62); err != nil || (Limits{}).Set() {
		t.Errorf("no limits refused a write: %v", err)
	}
	if err := (Limits{Messages: 2}).Check(1<<62, 2); err != nil {
		t.Errorf("a message limit alone checked bytes: %v", err)
	}
}

func TestBodyTooLarge(t *testing.T) {
	err := Limits{Bytes: 10}.BodyTooLarge(11)
	var qe *Error
	if !errors.As(err, &qe) || qe.Used != 11 || qe.Limit != 10 || !strings.Contains(err.Error(), "11 bytes") {
		t.Fatalf("BodyTooLarge(11) = %v", err)
	}
	if err := (Limits{Bytes: 10}).BodyTooLarge(10); err != nil {
		t.Fatalf("a body of exactly the limit: %v", err)
	}
	if err := (Limits{Messages: 1}).BodyTooLarge(1 << 40); err != nil {
		t.Fatalf("a message limit bounded a body: %v", err)
	}
}

// TestPartsFitTheEngine checks the contract of Parts with the statements
// that use them: the CTE names the engine's templates refer to.
func TestPartsFitTheEngine(t *testing.T) {
	for _, want := range []string{"old AS", "usage AS", "next AS", "charged AS (UPDATE", "RETURNING 1", "@size", "@max_bytes", "@max_messages", "{row}", "{tenant_rows}", "{table}"} {
		if !strings.Contains(Parts["charge"], want) {
			t.Errorf("charge lacks %q", want)
		}
	}
	for _, want := range []string{"refunded AS (UPDATE", "gone_rows", "bytes IS NOT NULL"} {
		if !strings.Contains(Parts["refund"], want) {
			t.Errorf("refund lacks %q", want)
		}
	}
	if !strings.Contains(LockSQL, "FOR NO KEY UPDATE") || !strings.Contains(LockSQL, "'active'") {
		t.Errorf("LockSQL does not lock an active tenant's row: %s", LockSQL)
	}
}

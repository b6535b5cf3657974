package pg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestClassify(t *testing.T) {
	pgErr := func(code, msg string) error { return fmt.Errorf("exec: %w", &pgconn.PgError{Code: code, Message: msg}) }
	cases := []struct {
		err  error
		want error // nil: no sentinel
	}{
		{pgErr("42P01", "relation does not exist"), ErrTableMissing},
		{pgErr("3F000", "schema does not exist"), ErrTableMissing},
		{pgErr("0A000", "cached plan must not change result type"), ErrStalePlan},
		{pgErr("0A000", "functions used in the DO UPDATE SET clause ... must be marked IMMUTABLE"), nil},
		{pgErr("42P05", `prepared statement "stmtcache_1" already exists`), ErrPreparedStatements},
		{pgErr("26000", `prepared statement "stmtcache_1" does not exist`), ErrPreparedStatements},
		{pgErr("57P01", "terminating connection due to administrator command"), ErrConnection},
		{pgErr("08006", "connection failure"), ErrConnection},
		{pgErr("57014", "canceling statement due to statement timeout"), nil},
		{pgErr("23505", "duplicate key"), nil},
		{fmt.Errorf("read: %w", io.ErrUnexpectedEOF), ErrConnection},
		{pgconn.ErrConnClosed, ErrConnection},
		{fmt.Errorf("wait: %w", context.DeadlineExceeded), nil},
		{context.Canceled, nil},
		{errors.New("something else"), nil},
	}
	for _, c := range cases {
		got := Classify(c.err)
		if !errors.Is(got, c.err) {
			t.Errorf("Classify(%v) = %v: lost the original error", c.err, got)
		}
		for _, s := range []error{ErrTableMissing, ErrStalePlan, ErrPreparedStatements, ErrConnection} {
			if errors.Is(got, s) != (s == c.want) {
				t.Errorf("Classify(%v) = %v; errors.Is(%v) = %v", c.err, got, s, errors.Is(got, s))
			}
		}
	}
	if Classify(nil) != nil {
		t.Error("Classify(nil) != nil")
	}
}

func TestOnceSharesAndHonoursContext(t *testing.T) {
	var o Once[int]
	started, release := make(chan struct{}), make(chan struct{})
	runs := 0
	type result struct {
		v   int
		err error
	}
	first := make(chan result)
	go func() {
		v, err := o.Do(context.Background(), "k", func(context.Context) (int, error) {
			runs++
			close(started)
			<-release
			return 42, errors.New("shared result")
		})
		first <- result{v, err}
	}()
	<-started
	// A caller that gives up gets its context's cause.
	ctx, cancel := context.WithCancelCause(context.Background())
	cause := errors.New("caller gave up")
	cancel(cause)
	if _, err := o.Do(ctx, "k", func(context.Context) (int, error) { runs++; return 0, nil }); !errors.Is(err, cause) {
		t.Fatalf("waiter got %v, want its context's cause", err)
	}
	// A caller that joins gets the run's value and error, not its own.
	joined := make(chan result)
	go func() {
		v, err := o.Do(context.Background(), "k", func(context.Context) (int, error) { runs++; return 7, nil })
		joined <- result{v, err}
	}()
	for o.callers("k") < 3 { // the first caller, the one that gave up, the joiner
		runtime.Gosched()
	}
	close(release)
	for _, ch := range []chan result{first, joined} {
		if r := <-ch; r.v != 42 || r.err == nil || r.err.Error() != "shared result" {
			t.Fatalf("caller got %d, %v; want the shared run's 42 and error", r.v, r.err)
		}
	}
	if runs != 1 {
		t.Fatalf("work ran %d times, want once", runs)
	}
}

func TestIsTransient(t *testing.T) {
	pgErr := func(code string) error { return fmt.Errorf("exec: %w", &pgconn.PgError{Code: code}) }
	for _, c := range []struct {
		err  error
		want bool
	}{
		{pgErr("40P01"), true}, {pgErr("40001"), true}, {pgErr("55P03"), true}, {pgErr("57014"), true},
		{pgErr("53200"), true}, {pgErr("57P01"), true}, {io.ErrUnexpectedEOF, true},
		{pgErr("23505"), false}, {pgErr("42P01"), false}, {context.Canceled, false},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), false}, {nil, false},
	} {
		if got := IsTransient(c.err); got != c.want {
			t.Errorf("IsTransient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestRetry(t *testing.T) {
	ctx := context.Background()
	transient := &pgconn.PgError{Code: "40P01"}
	calls, retried := 0, 0
	err := Retry(ctx, 5, func(error) { retried++ }, func() error {
		if calls++; calls < 3 {
			return transient
		}
		return nil
	})
	if err != nil || calls != 3 || retried != 2 {
		t.Fatalf("Retry = %v after %d calls, %d retries; want nil after 3 calls", err, calls, retried)
	}
	calls = 0
	if err := Retry(ctx, 3, nil, func() error { calls++; return transient }); !errors.Is(err, transient) || calls != 3 {
		t.Fatalf("Retry of a lasting error = %v after %d calls; want it after 3", err, calls)
	}
	calls = 0
	final := errors.New("not transient")
	if err := Retry(ctx, 3, nil, func() error { calls++; return final }); err != final || calls != 1 {
		t.Fatalf("Retry of a final error = %v after %d calls; want it after 1", err, calls)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := Retry(cancelled, 3, nil, func() error { return transient }); !errors.Is(err, context.Canceled) || !errors.Is(err, transient) {
		t.Fatalf("Retry with a cancelled context = %v; want both errors", err)
	}
}

// TestConnectFailure connects to a port where nothing listens: one
// sentence with the address, the database, the cause and what to check,
// that is still ErrConnection and the driver's error.
func TestConnectFailure(t *testing.T) {
	cfg, err := pgconn.ParseConfig("postgres://alice@127.0.0.1:1/shop?connect_timeout=5")
	if err != nil {
		t.Fatal(err)
	}
	_, connErr := pgconn.ConnectConfig(context.Background(), cfg)
	if connErr == nil {
		t.Skip("something listens on port 1")
	}
	got := ConnectFailure(cfg, true, connErr)
	want := `pgtenant: cannot connect to PostgreSQL at 127.0.0.1:1 (database "shop", user "alice"): connection refused; ` +
		`check that the server runs and listens at that address (no DSN was given`
	if !strings.HasPrefix(got.Error(), want) {
		t.Fatalf("ConnectFailure =\n%s\nwant it to start\n%s", got, want)
	}
	if !errors.Is(got, ErrConnection) || !errors.Is(got, connErr) {
		t.Fatalf("ConnectFailure lost ErrConnection or the driver's error: %v", got)
	}
	other := errors.New("syntax error")
	if ConnectFailure(cfg, false, other) != other {
		t.Fatal("ConnectFailure rewrote an error that is no failed connection")
	}
}

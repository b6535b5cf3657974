package testdb

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// EnvDSN names the variable that holds the server's DSN for package tests.
const EnvDSN = "PGTENANT_TEST_DSN"

var (
	mu        sync.Mutex
	serverDSN string
	noServer  string // why there is no server
	adminPool *pgxpool.Pool
	counter   atomic.Int64
)

// SetServer makes dsn the server of later databases; why, when dsn is
// empty, says why there is none (tests then skip, with that reason).
func SetServer(dsn, why string) {
	mu.Lock()
	defer mu.Unlock()
	serverDSN, noServer = dsn, why
}

// Required reports whether a test without a server must fail rather than
// skip (PGTENANT_REQUIRE_DOCKER=1, as in CI).
func Required() bool { return os.Getenv("PGTENANT_REQUIRE_DOCKER") == "1" }

// Main runs a package's tests against the server in PGTENANT_TEST_DSN.
// Without one, tests that need a database skip, or fail with
// PGTENANT_REQUIRE_DOCKER=1. withExamples says whether the package has
// Examples that connect to DATABASE_URL, as the README's code does: they
// get a database of their own there; without a server they are left out,
// or fail the run with PGTENANT_REQUIRE_DOCKER=1.
//
//	func TestMain(m *testing.M) { testdb.Main(m, true) }
func Main(m *testing.M, withExamples bool) {
	os.Exit(run(m, withExamples))
}

func run(m *testing.M, withExamples bool) int {
	dsn := os.Getenv(EnvDSN)
	if dsn == "" {
		SetServer("", EnvDSN+" is not set; `make test` starts a server and sets it")
		if Required() {
			fmt.Fprintln(os.Stderr, "FAIL: PGTENANT_REQUIRE_DOCKER=1 but", EnvDSN, "is not set: run `make test`")
			return 1
		}
		if withExamples {
			fmt.Fprintln(os.Stderr, "WARNING: leaving out the Examples, which need PostgreSQL:", EnvDSN, "is not set")
			if f := flagRun(); f == "" {
				_ = setRun("^(Test|Fuzz)")
			}
		}
		return m.Run()
	}
	SetServer(dsn, "")
	defer Close()
	if withExamples {
		db, err := create(context.Background(), fmt.Sprintf("examples_%d", os.Getpid()))
		if err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: a database for the Examples:", err)
			return 1
		}
		// search_path '': the README's code works without one.
		if err := os.Setenv("DATABASE_URL", withSearchPath(db)); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			return 1
		}
	}
	return m.Run()
}

// Close closes the pool the package keeps on the server.
func Close() {
	mu.Lock()
	defer mu.Unlock()
	if adminPool != nil {
		adminPool.Close()
		adminPool = nil
	}
}

// admin returns a pool on the server's own database.
func admin(t testing.TB) *pgxpool.Pool {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if serverDSN == "" {
		if noServer == "" {
			t.Fatal("testdb: no server: call testdb.Main or pgtest.Main from TestMain")
		}
		if Required() {
			t.Fatal("testdb: PGTENANT_REQUIRE_DOCKER=1 but there is no server: " + noServer)
		}
		t.Skip(noServer)
	}
	if adminPool == nil {
		p, err := pgxpool.New(context.Background(), serverDSN)
		if err != nil {
			t.Fatalf("testdb: %v", err)
		}
		adminPool = p
	}
	return adminPool
}

var nonWord = regexp.MustCompile(`[^a-z0-9]+`)

// New creates an empty database for t and returns its DSN. The DSN sets
// search_path to ” so that any unqualified SQL fails. The database is
// dropped when t passes and kept, with its name logged, when it fails.
func New(t testing.TB) string {
	t.Helper()
	pool := admin(t)
	name := nonWord.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	name = fmt.Sprintf("test_%s_%d", name, counter.Add(1))
	dsn, err := create(context.Background(), name)
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("testdb: kept database %s for debugging", name)
			return
		}
		if _, err := pool.Exec(context.Background(), "DROP DATABASE "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("testdb: dropping database %s: %v", name, err)
		}
	})
	return withSearchPath(dsn)
}

// Keep creates an empty database named after name that lives as long as
// the server, and returns its DSN (search_path ”).
func Keep(t testing.TB, name string) string {
	t.Helper()
	admin(t)
	dsn, err := create(context.Background(), fmt.Sprintf("proc_%s_%d", nonWord.ReplaceAllString(name, "_"), counter.Add(1)))
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	return withSearchPath(dsn)
}

// create creates database name and returns its DSN.
func create(ctx context.Context, name string) (string, error) {
	mu.Lock()
	dsn := serverDSN
	mu.Unlock()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("creating database %s: %w", name, err)
	}
	return Database(dsn, name)
}

// Database returns the server DSN dsn with its database replaced by name.
func Database(dsn, name string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	return u.String(), nil
}

func withSearchPath(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return dsn
	}
	q := u.Query()
	q.Set("search_path", "")
	u.RawQuery = q.Encode()
	return u.String()
}

// Pool opens a pool on dsn that is closed when t ends. Its connections
// set search_path to ” in AfterConnect, so unqualified SQL fails. change,
// if not nil, may adjust the configuration first.
func Pool(t testing.TB, dsn string, change func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, "SET search_path = ''")
		return err
	}
	if change != nil {
		change(cfg)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Package pgtest starts the PostgreSQL container the integration tests run
// against and hands each test a database of its own.
package pgtest

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/modules/postgres"
	"go.uber.org/goleak"
)

// DefaultImage is used when PGTENANT_POSTGRES_IMAGE is not set.
const DefaultImage = "postgres:17-alpine"

var (
	container  *postgres.PostgresContainer
	adminDSN   string
	skipReason string
	adminOnce  sync.Once
	adminPool  *pgxpool.Pool
	adminErr   error
	dbCounter  atomic.Int64
	exitMu     sync.Mutex
	atExit     []func()
)

// AtExit registers fn to run after all tests of the package, before the
// container is removed (for resources that outlive one test, such as a
// benchmark's pool).
func AtExit(fn func()) {
	exitMu.Lock()
	defer exitMu.Unlock()
	atExit = append(atExit, fn)
}

// Main starts the container, runs the package's tests, removes the
// container and checks for leaked goroutines. Call it from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
func Main(m *testing.M) {
	os.Exit(run(m, false))
}

// MainWithExamples is Main for a package whose Examples connect to
// DATABASE_URL, as the README's code does: it points DATABASE_URL at a
// database of their own in the container. Without a container (and
// without PGTENANT_REQUIRE_DOCKER=1), the Examples are left out as the
// tests are skipped:
//
//	func TestMain(m *testing.M) { pgtest.MainWithExamples(m) }
func MainWithExamples(m *testing.M) {
	os.Exit(run(m, true))
}

func run(m *testing.M, examples bool) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	err := start(ctx)
	if err == nil && examples {
		err = setExampleDatabase(ctx)
	}
	cancel()
	if err != nil {
		skipReason = "no PostgreSQL container (" + firstLine(err.Error()) + "); run `make test` to prepare Docker"
		if os.Getenv("PGTENANT_REQUIRE_DOCKER") == "1" {
			fmt.Fprintln(os.Stderr, "FAIL: PGTENANT_REQUIRE_DOCKER=1 but", skipReason)
			return 1
		}
		fmt.Fprintln(os.Stderr, "skipping integration tests:", skipReason)
		if examples && flag.Lookup("test.run").Value.String() == "" {
			fmt.Fprintln(os.Stderr, "leaving out the Examples, which need PostgreSQL")
			_ = flag.Set("test.run", "^(Test|Fuzz)")
		}
	}
	code := m.Run()
	exitMu.Lock()
	for i := len(atExit) - 1; i >= 0; i-- {
		atExit[i]()
	}
	exitMu.Unlock()
	if adminPool != nil {
		adminPool.Close()
	}
	if container != nil {
		if err := testcontainers.TerminateContainer(container); err != nil {
			fmt.Fprintln(os.Stderr, "terminating container:", err)
			code = 1
		}
	}
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreCurrent(), goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
			goleak.IgnoreAnyFunction("internal/poll.runtime_pollWait")); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	return code
}

func start(ctx context.Context) error {
	c, err := postgres.Run(ctx, image(),
		postgres.WithDatabase("pgtenant"),
		postgres.WithUsername("postgres"),
		postgres.WithPassword("postgres"),
		postgres.BasicWaitStrategies(),
		testcontainers.WithCmdArgs("-c", "max_connections=400", "-c", "max_locks_per_transaction=256"),
	)
	if err != nil {
		if c != nil {
			_ = testcontainers.TerminateContainer(c)
		}
		return err
	}
	container = c
	dsn, err := c.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		return err
	}
	adminDSN = dsn
	return nil
}

// setExampleDatabase creates the database "examples" and points
// DATABASE_URL at it, with an empty search_path.
func setExampleDatabase(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE examples"); err != nil {
		return err
	}
	dsn, err := databaseDSN("examples")
	if err != nil {
		return err
	}
	// search_path '' as in NewDatabase: the README's code works without one.
	return os.Setenv("DATABASE_URL", dsn+"&search_path=")
}

// databaseDSN is the container's DSN for database name.
func databaseDSN(name string) (string, error) {
	u, err := url.Parse(adminDSN)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	return u.String(), nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// Container returns the running container; the test is skipped without one.
func Container(t testing.TB) *postgres.PostgresContainer {
	t.Helper()
	need(t)
	return container
}

func need(t testing.TB) {
	t.Helper()
	if adminDSN == "" {
		if skipReason == "" {
			t.Fatal("pgtest: TestMain does not call pgtest.Main")
		}
		t.Skip(skipReason)
	}
}

func admin(t testing.TB) *pgxpool.Pool {
	t.Helper()
	need(t)
	adminOnce.Do(func() {
		adminPool, adminErr = pgxpool.New(context.Background(), adminDSN)
	})
	if adminErr != nil {
		t.Fatalf("pgtest: admin pool: %v", adminErr)
	}
	return adminPool
}

var nonWord = regexp.MustCompile(`[^a-z0-9]+`)

// ProcessDatabase creates an empty database named after name that lives
// until the container is removed, and returns its DSN (search_path ”).
func ProcessDatabase(t testing.TB, name string) string {
	t.Helper()
	return createDatabase(t, fmt.Sprintf("proc_%s_%d", nonWord.ReplaceAllString(name, "_"), dbCounter.Add(1)))
}

// NewDatabase creates an empty database for t and returns its DSN. The DSN
// sets search_path to ” so that any unqualified SQL fails. The database is
// dropped when t passes and kept, with its name logged, when it fails.
func NewDatabase(t testing.TB) string {
	t.Helper()
	pool := admin(t)
	name := nonWord.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	name = fmt.Sprintf("test_%s_%d", name, dbCounter.Add(1))
	dsn := createDatabase(t, name)
	ctx := context.Background()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pgtest: kept database %s for debugging", name)
			return
		}
		if _, err := pool.Exec(ctx, "DROP DATABASE "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: dropping database %s: %v", name, err)
		}
	})
	return dsn
}

func createDatabase(t testing.TB, name string) string {
	t.Helper()
	pool := admin(t)
	if _, err := pool.Exec(context.Background(), "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: creating database %s: %v", name, err)
	}
	dsn, err := databaseDSN(name)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", "")
	u.RawQuery = q.Encode()
	return u.String()
}

// NewPool opens a pool on dsn that is closed when t ends. Its connections
// set search_path to ” in AfterConnect, so unqualified SQL fails. change,
// if not nil, may adjust the configuration first.
func NewPool(t testing.TB, dsn string, change func(*pgxpool.Config)) *pgxpool.Pool {
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

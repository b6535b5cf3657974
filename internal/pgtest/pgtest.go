package pgtest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgtenant/pgtenant/internal/testdb"
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
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	err := start(ctx)
	cancel()
	if err != nil {
		skipReason = "no PostgreSQL container (" + firstLine(err.Error()) + "); run `make test` to prepare Docker"
		testdb.SetServer("", skipReason)
		if testdb.Required() {
			fmt.Fprintln(os.Stderr, "FAIL: PGTENANT_REQUIRE_DOCKER=1 but", skipReason)
			return 1
		}
		fmt.Fprintln(os.Stderr, "skipping integration tests:", skipReason)
	} else {
		testdb.SetServer(adminDSN, "")
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
	testdb.Close()
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

// ProcessDatabase creates an empty database named after name that lives
// until the container is removed, and returns its DSN (search_path ”).
func ProcessDatabase(t testing.TB, name string) string {
	t.Helper()
	need(t)
	return testdb.Keep(t, name)
}

// NewDatabase creates an empty database for t and returns its DSN; see
// testdb.New.
func NewDatabase(t testing.TB) string {
	t.Helper()
	need(t)
	return testdb.New(t)
}

// NewPool opens a pool on dsn that is closed when t ends; see testdb.Pool.
func NewPool(t testing.TB, dsn string, change func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	return testdb.Pool(t, dsn, change)
}

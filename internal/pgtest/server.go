package pgtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dockercontainer "github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/modules/postgres"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Server is a PostgreSQL container of one test's own, for faults that would
// disturb the other tests, such as stopping and starting the server. Its
// host port is chosen once and bound explicitly, so that after Stop and
// Start the server is back at the same address, as a restarted production
// server is; clients need not be rebuilt.
type Server struct {
	c   *postgres.PostgresContainer
	dsn string
}

// Stop signals for NewServer.
const (
	// FastShutdown makes Stop a clean, fast shutdown (SIGINT), as the
	// official image does; Docker's default SIGTERM is PostgreSQL's smart
	// shutdown, which waits for clients.
	FastShutdown = "SIGINT"
	// Crash makes Stop kill the server (SIGKILL): the next Start runs crash
	// recovery from the WAL.
	Crash = "SIGKILL"
)

// NewServer starts a dedicated server that Stop stops with stopSignal
// (FastShutdown or Crash); it is removed when t ends. settings are extra
// server settings, "name=value" each (max_connections is 200 unless one of
// them sets it).
func NewServer(t testing.TB, stopSignal string, settings ...string) *Server {
	t.Helper()
	need(t)
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := postgres.Run(ctx, image(),
		postgres.WithDatabase("pgtenant"),
		postgres.WithUsername("postgres"),
		postgres.WithPassword("postgres"),
		postgres.BasicWaitStrategies(),
		testcontainers.WithCmdArgs(serverArgs(settings)...),
		testcontainers.WithConfigModifier(func(cfg *dockercontainer.Config) { cfg.StopSignal = stopSignal }),
		testcontainers.WithHostConfigModifier(func(hc *dockercontainer.HostConfig) {
			hc.PortBindings = network.PortMap{network.MustParsePort("5432/tcp"): {{HostPort: strconv.Itoa(port)}}}
		}),
	)
	testcontainers.CleanupContainer(t, c)
	if err != nil {
		t.Fatalf("pgtest: starting a dedicated server: %v", err)
	}
	dsn, err := c.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if got := u.Port(); got != strconv.Itoa(port) {
		t.Fatalf("pgtest: server bound to port %s, want %d", got, port)
	}
	q := u.Query()
	q.Set("search_path", "")
	u.RawQuery = q.Encode()
	return &Server{c: c, dsn: u.String()}
}

func serverArgs(settings []string) []string {
	args := []string{"-c", "max_connections=200"}
	for _, s := range settings {
		args = append(args, "-c", s)
	}
	return args
}

// DSN returns the DSN of the server's database (search_path ”).
func (s *Server) DSN() string { return s.dsn }

// Stop stops the server with its stop signal, keeping its data.
func (s *Server) Stop(ctx context.Context) error {
	timeout := 30 * time.Second
	return s.c.Stop(ctx, &timeout)
}

// Start starts the stopped server again and waits until it accepts
// connections.
func (s *Server) Start(ctx context.Context) error {
	if err := s.c.Start(ctx); err != nil {
		return err
	}
	// Start re-runs the log wait strategy, which the first run's log lines
	// already satisfy; wait for this run's readiness explicitly.
	return wait.ForExec([]string{"pg_isready", "-h", "127.0.0.1", "-U", "postgres"}).
		WithPollInterval(100*time.Millisecond).WithStartupTimeout(time.Minute).
		WaitUntilReady(ctx, s.c)
}

// freePort returns a TCP port that was free on the loopback interface a
// moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func image() string {
	if img := os.Getenv("PGTENANT_POSTGRES_IMAGE"); img != "" {
		return img
	}
	return DefaultImage
}

// pgbouncerINI is PgBouncer's configuration: transaction pooling, any
// client user (all server connections log in as postgres), poolSize server
// connections per database. search_path is accepted from clients and
// dropped: PgBouncer cannot keep session state in transaction mode.
const pgbouncerINI = `[databases]
* = host=%s port=5432 user=postgres password=postgres

[pgbouncer]
listen_addr = 0.0.0.0
listen_port = 6432
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = %d
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 2000
max_db_connections = %d
ignore_startup_parameters = extra_float_digits,search_path
server_reset_query =
`

// Bouncer is a PgBouncer in transaction pooling mode in front of the
// package's server.
type Bouncer struct {
	hostPort string
}

// PgBouncer starts PgBouncer (from $PGTENANT_PGBOUNCER_IMAGE) in front of the
// package's server, with at most poolSize server connections per database;
// it is removed when t ends.
func PgBouncer(t testing.TB, poolSize int) *Bouncer {
	t.Helper()
	need(t)
	img := os.Getenv("PGTENANT_PGBOUNCER_IMAGE")
	if img == "" {
		msg := "PGTENANT_PGBOUNCER_IMAGE is not set; run `make test` to prepare an image with PgBouncer"
		if os.Getenv("PGTENANT_REQUIRE_DOCKER") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ip, err := container.ContainerIP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ini := fmt.Sprintf(pgbouncerINI, ip, poolSize, poolSize)
	c, err := testcontainers.Run(ctx, img,
		testcontainers.WithEntrypoint("runuser", "-u", "postgres", "--", "pgbouncer", "/etc/pgbouncer/pgtenant.ini"),
		testcontainers.WithCmd(),
		testcontainers.WithFiles(testcontainers.ContainerFile{
			Reader: strings.NewReader(ini), ContainerFilePath: "/etc/pgbouncer/pgtenant.ini", FileMode: 0o644,
		}),
		testcontainers.WithExposedPorts("6432/tcp"),
		testcontainers.WithWaitStrategy(wait.ForLog("process up").WithStartupTimeout(time.Minute)),
	)
	testcontainers.CleanupContainer(t, c)
	if err != nil {
		t.Fatalf("pgtest: starting PgBouncer: %v", err)
	}
	hp, err := c.PortEndpoint(ctx, "6432/tcp", "")
	if err != nil {
		t.Fatal(err)
	}
	return &Bouncer{hostPort: hp}
}

// DSN turns a DSN from NewDatabase into one that goes through PgBouncer.
// PgBouncer drops the search_path startup parameter, so the database's
// default search_path is set to ” instead (ALTER DATABASE), which keeps
// unqualified SQL failing on every server connection.
func (b *Bouncer) DSN(t testing.TB, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	db := strings.TrimPrefix(u.Path, "/")
	if _, err := admin(t).Exec(context.Background(), "ALTER DATABASE "+pgx.Identifier{db}.Sanitize()+" SET search_path = ''"); err != nil {
		t.Fatal(err)
	}
	u.Host = b.hostPort
	q := u.Query()
	q.Del("search_path")
	u.RawQuery = q.Encode()
	return u.String()
}

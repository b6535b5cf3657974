//go:build citus

package citus

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgtenant/pgtenant/integration/conformance"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
	datastorage "schneider.vip/retryspool/storage/data"
	metastorage "schneider.vip/retryspool/storage/meta"
)

var (
	// dsn is the coordinator's.
	dsn string
	// run makes this run's table and tenant names its own, so that runs
	// against one database never meet.
	run = fmt.Sprintf("%06x", time.Now().UnixNano()&0xffffff)
	// modes are the modes pgtenant distributes on Citus.
	modes = []schema.Isolation{schema.SchemaPerTenant, schema.SharedTable}
)

func TestMain(m *testing.M) {
	dsn = os.Getenv("PGTENANT_CITUS_DSN")
	if dsn == "" {
		fmt.Fprintln(os.Stderr, "FAIL: PGTENANT_CITUS_DSN is not set: run `make test-citus`, which starts the cluster of ../shared/citus/cluster.sh")
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err == nil {
		var version string
		err = conn.QueryRow(ctx, "SELECT pg_catalog.citus_version()").Scan(&version)
		conn.Close(ctx)
		fmt.Fprintln(os.Stderr, "citus suite on", version)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: no Citus coordinator at PGTENANT_CITUS_DSN:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// name returns a name of this run's for what a test calls name.
func name(what string) string { return "q" + run + "_" + what }

// factory is a Factory on the coordinator for mode, with a store of its
// own (table name), so that tests never share tenants.
func factory(mode schema.Isolation, store string) *tenant.Factory {
	return tenant.NewFactory(dsn).WithIsolation(mode).WithTableName(name(store)).WithConnectionLimits(8, 0)
}

func forEachMode(t *testing.T, fn func(t *testing.T, mode schema.Isolation)) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			fn(t, mode)
		})
	}
}

func openAdmin(t testing.TB, f *tenant.Factory) *tenant.Admin {
	t.Helper()
	return conformance.MustOpen(t, f.OpenAdmin)
}

func openRouter(t testing.TB, f *tenant.Factory) *tenant.Router {
	t.Helper()
	return conformance.MustOpen(t, f.Open)
}

func openMeta(t testing.TB, f *tenant.Factory) *tenant.MetaBackend {
	t.Helper()
	return conformance.MustOpen(t, f.Meta().Open)
}

// inspect returns a pool on the coordinator for the tests' own queries.
func inspect(t testing.TB) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// distribution says how a table is distributed: "reference", "single
// shard", "hash" or "local", and its co-location group.
func distribution(t testing.TB, p *pgxpool.Pool, table string) (string, int) {
	t.Helper()
	var (
		kind  string
		group int
	)
	err := p.QueryRow(context.Background(), `SELECT CASE WHEN partmethod = 'h' THEN 'hash' WHEN repmodel = 't' THEN 'reference' ELSE 'single shard' END,
		colocationid FROM pg_dist_partition WHERE logicalrelid = to_regclass($1)`, table).Scan(&kind, &group)
	if errors.Is(err, pgx.ErrNoRows) {
		return "local", 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return kind, group
}

// TestCitusSetsItselfUp: on a coordinator pgtenant distributes what it
// creates, with no SQL from the user, whether or not schema-based
// sharding is on: the registry is a reference table, SharedTable's tables
// are distributed on tenant_id and co-located, and a tenant's schema is a
// distributed schema.
func TestCitusSetsItselfUp(t *testing.T) {
	p := inspect(t)
	ctx := context.Background()
	for _, sharding := range []string{"off", "on"} {
		t.Run("schema-sharding="+sharding, func(t *testing.T) {
			for _, mode := range modes {
				f := tenant.NewFactory(dsn+"&options=-c%20citus.enable_schema_based_sharding%3D"+sharding).WithIsolation(mode).
					WithTableName(name("setup_"+sharding)).WithConnectionLimits(2, 0)
				admin := openAdmin(t, f)
				id := "setup-" + sharding
				if err := admin.Provision(ctx, id); err != nil {
					t.Fatalf("%v: Provision: %v", mode, err)
				}
				if kind, _ := distribution(t, p, "pgtenant.tenants"); kind != "reference" {
					t.Errorf("the registry is %s, want a reference table", kind)
				}
				loc, err := admin.Locate(id)
				if err != nil {
					t.Fatal(err)
				}
				switch mode {
				case schema.SharedTable:
					kind, group := distribution(t, p, loc.Table.Sanitize())
					for _, tb := range []schema.Table{loc.Chunks, loc.Meta} {
						k, g := distribution(t, p, tb.Sanitize())
						if k != "hash" || g != group {
							t.Errorf("%s is %s in group %d, want hash distributed with %s (group %d)", tb, k, g, loc.Table, group)
						}
					}
					if kind != "hash" {
						t.Errorf("the shared table is %s, want distributed on tenant_id", kind)
					}
				case schema.SchemaPerTenant:
					var distributed bool
					if err := p.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_dist_schema WHERE schemaid = to_regnamespace($1))",
						loc.Table.Schema).Scan(&distributed); err != nil || !distributed {
						t.Errorf("the tenant's schema %s is not a distributed schema (%v)", loc.Table.Schema, err)
					}
					for _, tb := range []schema.Table{loc.Table, loc.Chunks, loc.Meta} {
						if k, _ := distribution(t, p, tb.Sanitize()); k != "single shard" {
							t.Errorf("%s is %s, want a single-shard table of the tenant's schema", tb, k)
						}
					}
				}
			}
		})
	}
}

// TestCitusConformance runs both conformance suites on the cluster, on
// pinned and on routed backends.
func TestCitusConformance(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		f := factory(mode, "conf")
		var n atomic.Int64
		t.Run("data", func(t *testing.T) {
			conformance.Exercise(t, func(t *testing.T) (datastorage.Backend, context.Context) {
				r, err := f.Create()
				if err != nil {
					t.Fatal(err)
				}
				return r, tenant.WithTenant(context.Background(), fmt.Sprintf("d-%d", n.Add(1)))
			})
		})
		t.Run("meta-pinned", func(t *testing.T) {
			conformance.ExerciseMeta(t, func(t *testing.T) (metastorage.Backend, context.Context) {
				b, err := f.ForTenant(fmt.Sprintf("p-%d", n.Add(1))).Meta().Create()
				if err != nil {
					t.Fatal(err)
				}
				return b, context.Background()
			})
		})
		t.Run("meta-routed", func(t *testing.T) {
			conformance.ExerciseMeta(t, func(t *testing.T) (metastorage.Backend, context.Context) {
				b, err := f.Meta().Create()
				if err != nil {
					t.Fatal(err)
				}
				return b, tenant.WithTenant(context.Background(), fmt.Sprintf("r-%d", n.Add(1)))
			})
		})
	})
}

// remotes counts, per call, the commands the coordinator sends to other
// nodes and the nodes it sends them to, from citus.log_remote_commands'
// notices on a pool of one connection.
type remotes struct {
	mu       sync.Mutex
	commands int
	nodes    map[string]bool
}

var onServer = regexp.MustCompile(`on server \S+@(\S+) connectionId`)

func (r *remotes) notice(_ *pgconn.PgConn, n *pgconn.Notice) {
	if !strings.HasPrefix(n.Message, "issuing ") {
		return
	}
	m := onServer.FindStringSubmatch(n.Detail)
	if m == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nodes == nil {
		r.nodes = map[string]bool{}
	}
	r.commands++
	r.nodes[m[1]] = true
}

// during returns the commands and nodes of what fn sends.
func (r *remotes) during(fn func() error) (int, int, error) {
	r.mu.Lock()
	r.commands, r.nodes = 0, map[string]bool{}
	r.mu.Unlock()
	err := fn()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.commands, len(r.nodes), err
}

// loggingPool is a pool of one connection on the coordinator whose remote
// commands r counts.
func loggingPool(t testing.TB, r *remotes) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	cfg.ConnConfig.RuntimeParams["citus.log_remote_commands"] = "on"
	cfg.ConnConfig.OnNotice = r.notice
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// TestCitusRouting checks that every statement of a queue host's cycle
// goes to one worker, as a single server would run it: each call of the
// data and metadata backends sends its one statement to one node. It logs
// what costs more than one node (registry writes, quotas).
func TestCitusRouting(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		r := &remotes{}
		pool := loggingPool(t, r)
		f := tenant.NewFactory(dsn).WithPool(pool).WithIsolation(mode).WithTableName(name("route"))
		ctx := context.Background()
		admin := openAdmin(t, f)
		id := "routed"
		cmds, nodes, err := r.during(func() error { return admin.Provision(ctx, id) })
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%v: Provision sent %d commands to %d nodes (the registry is on every node)", mode, cmds, nodes)
		pinned := f.ForTenant(id)
		data := openRouter(t, pinned)
		meta := openMeta(t, pinned)
		body := bytes.Repeat([]byte("b"), 1024)
		md := metastorage.MessageMetadata{ID: "m", State: metastorage.StateIncoming, Created: time.Now(), Headers: map[string]string{"k": "v"}}
		steps := []struct {
			name string
			fn   func() error
		}{
			{"StoreData", func() error { _, err := data.StoreData(ctx, "m", bytes.NewReader(body)); return err }},
			{"StoreMeta", func() error { return meta.StoreMeta(ctx, "m", md) }},
			{"MoveToState", func() error { return meta.MoveToState(ctx, "m", metastorage.StateIncoming, metastorage.StateActive) }},
			{"GetMeta", func() error { _, err := meta.GetMeta(ctx, "m"); return err }},
			{"GetDataReader", func() error {
				rc, err := data.GetDataReader(ctx, "m")
				if err != nil {
					return err
				}
				defer rc.Close()
				_, err = io.Copy(io.Discard, rc)
				return err
			}},
			{"UpdateMeta", func() error { md.State = metastorage.StateDeferred; return meta.UpdateMeta(ctx, "m", md) }},
			{"ListMessages", func() error {
				_, err := meta.ListMessages(ctx, metastorage.StateDeferred, metastorage.MessageListOptions{})
				return err
			}},
			{"NewMessageIterator", func() error {
				it, err := meta.NewMessageIterator(ctx, metastorage.StateDeferred, 10)
				if err != nil {
					return err
				}
				defer it.Close()
				_, _, err = it.Next(ctx)
				return err
			}},
			{"DeleteData", func() error { return data.DeleteData(ctx, "m") }},
			{"DeleteMeta", func() error { return meta.DeleteMeta(ctx, "m") }},
		}
		for _, s := range steps {
			cmds, nodes, err := r.during(s.fn)
			if err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			if nodes != 1 {
				t.Errorf("%v: %s sent %d commands to %d nodes, want one node", mode, s.name, cmds, nodes)
			}
			// Every step is one command: an inline body is written and
			// deleted without the chunk table (the inline fast path).
			if cmds != 1 {
				t.Errorf("%v: %s sent %d commands, want 1", mode, s.name, cmds)
			}
		}
		cmds, nodes, err = r.during(func() error { return admin.Drop(ctx, id) })
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%v: Drop sent %d commands to %d nodes", mode, cmds, nodes)
	})
}

// TestCitusQuotaRoundTrips counts what a quota'd write costs on the
// cluster: the usage lives in the registry, a reference table, so its
// lock and update reach every node.
func TestCitusQuotaRoundTrips(t *testing.T) {
	t.Parallel()
	r := &remotes{}
	pool := loggingPool(t, r)
	f := tenant.NewFactory(dsn).WithPool(pool).WithIsolation(schema.SharedTable).WithTableName(name("quota_rt")).WithQuota(1<<20, 100)
	data := openRouter(t, f.ForTenant("q"))
	ctx := context.Background()
	cmds, nodes, err := r.during(func() error { _, err := data.StoreData(ctx, "m", strings.NewReader("x")); return err })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a quota'd StoreData: %d remote commands on %d nodes", cmds, nodes)
	cmds, nodes, err = r.during(func() error { return data.DeleteData(ctx, "m") })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a quota'd DeleteData: %d remote commands on %d nodes", cmds, nodes)
}

// TestCitusDropAndTombstones: a dropped tenant takes no write and has no
// data on the cluster, comes back empty with Provision; DropMany drops
// many; Stats, Overview, Purge and MigrateAll work.
func TestCitusDropAndTombstones(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		f := factory(mode, "drop")
		admin := openAdmin(t, f)
		r := openRouter(t, f)
		meta := openMeta(t, f)
		bg := context.Background()
		ctx := tenant.WithTenant(bg, "gone")
		conformance.MustStore(t, r, ctx, "m", []byte("body"))
		conformance.MustStoreMeta(t, meta, ctx, "m", conformance.Meta(1, metastorage.StateIncoming))
		st, err := admin.Stats(bg, "gone")
		if err != nil || st.Messages != 1 || st.Queued != 1 {
			t.Fatalf("Stats = %+v, %v", st, err)
		}
		if _, err := admin.Overview(bg); err != nil {
			t.Fatalf("Overview: %v", err)
		}
		if res, err := admin.MigrateAll(bg, tenant.BatchOptions{}); err != nil || len(res.Failed) > 0 {
			t.Fatalf("MigrateAll: %+v, %v", res, err)
		}
		if err := admin.Drop(bg, "gone"); err != nil {
			t.Fatal(err)
		}
		if _, err := r.StoreData(ctx, "late", strings.NewReader("x")); !errors.Is(err, tenant.ErrTenantDeleted) {
			t.Fatalf("a write after Drop = %v, want ErrTenantDeleted", err)
		}
		if _, err := r.GetDataReader(ctx, "m"); !errors.Is(err, datastorage.ErrDataNotFound) {
			t.Fatalf("a read after Drop = %v", err)
		}
		if err := admin.Provision(bg, "gone"); err != nil {
			t.Fatal(err)
		}
		if st, err := admin.Stats(bg, "gone"); err != nil || st.Messages != 0 || st.Queued != 0 {
			t.Fatalf("after Provision: %+v, %v; want empty", st, err)
		}
		ids := []string{"many-1", "many-2", "many-3"}
		for _, id := range ids {
			conformance.MustStore(t, r, tenant.WithTenant(bg, id), "m", []byte("x"))
		}
		if n, err := admin.Purge(bg, "many-1", 0); err != nil || n != 1 {
			t.Fatalf("Purge = %d, %v", n, err)
		}
		res, err := admin.DropMany(bg, ids, tenant.BatchOptions{Concurrency: 2})
		if err != nil || res.Dropped != len(ids) {
			t.Fatalf("DropMany = %+v, %v", res, err)
		}
	})
}

// TestCitusQuotaExact: 16 writers of 64 KiB against a 512 KiB quota, on
// two hosts: exactly 8 stored.
func TestCitusQuotaExact(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		hosts := []*tenant.Router{openRouter(t, factory(mode, "quota").WithQuota(512<<10, 0)), openRouter(t, factory(mode, "quota").WithQuota(512<<10, 0))}
		ctx := tenant.WithTenant(context.Background(), "capped")
		var stored, refused atomic.Int64
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				_, err := hosts[i%2].StoreData(ctx, fmt.Sprintf("m%d", i), bytes.NewReader(make([]byte, 64<<10)))
				switch {
				case err == nil:
					stored.Add(1)
				case errors.Is(err, tenant.ErrQuotaExceeded):
					refused.Add(1)
				default:
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if stored.Load() != 8 || refused.Load() != 8 {
			t.Fatalf("stored %d, refused %d; want exactly 8 of 16 under 512 KiB", stored.Load(), refused.Load())
		}
	})
}

// TestCitusMoveUnderLoad moves a busy tenant's schema to the other worker
// with citus_schema_move while writers and readers run: no acknowledged
// write is lost, and no read returns a body that was never stored.
func TestCitusMoveUnderLoad(t *testing.T) {
	t.Parallel()
	p := inspect(t)
	bg := context.Background()
	f := factory(schema.SchemaPerTenant, "move")
	r := openRouter(t, f)
	admin := openAdmin(t, f)
	const id = "mover"
	if err := admin.Provision(bg, id); err != nil {
		t.Fatal(err)
	}
	loc, err := admin.Locate(id)
	if err != nil {
		t.Fatal(err)
	}
	nodePort := func() int {
		var port int
		if err := p.QueryRow(bg, "SELECT nodeport FROM citus_shards WHERE table_name = to_regclass($1) LIMIT 1",
			loc.Table.Sanitize()).Scan(&port); err != nil {
			t.Fatal(err)
		}
		return port
	}
	from := nodePort()
	var to int
	if err := p.QueryRow(bg, "SELECT node_port FROM citus_get_active_worker_nodes() WHERE node_port <> $1 LIMIT 1", from).Scan(&to); err != nil {
		t.Fatal(err)
	}
	var walLevel string
	if err := p.QueryRow(bg, "SHOW wal_level").Scan(&walLevel); err != nil {
		t.Fatal(err)
	}
	transfer := "force_logical" // writes go on during the move
	if walLevel != "logical" {
		transfer = "block_writes" // writes wait for the move
	}

	ctx := tenant.WithTenant(bg, id)
	digest := func(b []byte) [32]byte { return sha256.Sum256(b) }
	var (
		mu      sync.Mutex
		acked   = map[string][32]byte{}
		reads   atomic.Int64
		fails   atomic.Int64
		stop    = make(chan struct{})
		writers sync.WaitGroup
	)
	for w := range 4 {
		writers.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				msg := fmt.Sprintf("w%d-%d", w, i)
				body := bytes.Repeat([]byte(msg), 100+rand.IntN(200))
				wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := r.StoreData(wctx, msg, bytes.NewReader(body))
				cancel()
				if err != nil {
					fails.Add(1)
					continue
				}
				mu.Lock()
				acked[msg] = digest(body)
				mu.Unlock()
			}
		})
	}
	for range 2 {
		writers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				var msg string
				var want [32]byte
				for k, v := range acked { // any one
					msg, want = k, v
					break
				}
				mu.Unlock()
				if msg == "" {
					continue
				}
				got, err := conformance.Read(t, r, ctx, msg)
				if err != nil {
					continue // a read may fail during the move; it must never lie
				}
				reads.Add(1)
				if digest(got) != want {
					t.Errorf("read of %s returned a body that was never stored", msg)
				}
			}
		})
	}
	for { // the load has started
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 50 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	if _, err := p.Exec(bg, "SELECT citus_schema_move($1::regnamespace, '127.0.0.1', $2, shard_transfer_mode => $3::citus.shard_transfer_mode)",
		loc.Table.Schema, to, transfer); err != nil {
		close(stop)
		writers.Wait()
		t.Fatalf("citus_schema_move: %v", err)
	}
	moved := time.Since(start)
	time.Sleep(300 * time.Millisecond) // load after the move (its duration, not synchronisation)
	close(stop)
	writers.Wait()
	if now := nodePort(); now != to {
		t.Fatalf("the schema is on port %d after the move, want %d", now, to)
	}
	mu.Lock()
	defer mu.Unlock()
	for msg, want := range acked {
		got, err := conformance.Read(t, r, ctx, msg)
		if err != nil || digest(got) != want {
			t.Fatalf("acknowledged write %s lost after the move: %v", msg, err)
		}
	}
	st, err := admin.Stats(bg, id)
	if err != nil || st.Messages != int64(len(acked)) {
		t.Fatalf("Stats after the move: %+v, %v; want %d messages", st, err, len(acked))
	}
	t.Logf("moved from port %d to %d in %v (%s): %d acknowledged writes, all read back; %d reads during the load; %d writes failed",
		from, to, moved.Round(time.Millisecond), transfer, len(acked), reads.Load(), fails.Load())
}

// TestCitusTombstoneWaitsForWritesInFlight: a write that passed its guard
// and waits (on a row another session holds) holds the guard's lock on
// the worker; the tombstone waits for it there, so no write is
// acknowledged after the tombstone. (On Citus a SELECT FOR UPDATE of a
// reference table locks one replica: the tombstone's UPDATE of a key
// column is what reaches every replica.)
func TestCitusTombstoneWaitsForWritesInFlight(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		p := inspect(t)
		f := factory(mode, "tomb")
		r := openRouter(t, f)
		admin := openAdmin(t, f)
		bg := context.Background()
		ctx := tenant.WithTenant(bg, "busy")
		conformance.MustStore(t, r, ctx, "m", []byte("v1"))
		loc, err := admin.Locate("busy")
		if err != nil {
			t.Fatal(err)
		}
		where := "message_id = 'm'"
		if loc.Partition != "" {
			where += " AND tenant_id = 'busy'"
		}
		blocker, err := p.Begin(bg)
		if err != nil {
			t.Fatal(err)
		}
		defer blocker.Rollback(bg)
		if _, err := blocker.Exec(bg, "SELECT 1 FROM "+loc.Table.Sanitize()+" WHERE "+where+" FOR UPDATE"); err != nil {
			t.Fatal(err)
		}
		waits := func(n int) func() bool {
			return func() bool {
				var k int
				if err := p.QueryRow(bg, "SELECT count(*) FROM citus_lock_waits").Scan(&k); err != nil {
					t.Fatal(err)
				}
				return k >= n
			}
		}
		wrote := make(chan error, 1)
		go func() {
			_, err := r.StoreData(ctx, "m", strings.NewReader("v2"))
			wrote <- err
		}()
		within(t, 10*time.Second, "the write to wait for the message row", waits(1))
		dropped := make(chan error, 1)
		go func() { dropped <- admin.Drop(bg, "busy") }()
		within(t, 10*time.Second, "the tombstone to wait for the write", waits(2))
		var active int
		if err := p.QueryRow(bg, "SELECT count(*) FROM pgtenant.tenants WHERE tenant_id = 'busy' AND table_name = $1 AND state = 'active'",
			loc.Table.Name).Scan(&active); err != nil || active != 1 {
			t.Fatalf("the tombstone committed while a write that passed its guard was in flight (%v)", err)
		}
		if err := blocker.Rollback(bg); err != nil {
			t.Fatal(err)
		}
		if err := <-wrote; err != nil {
			t.Fatalf("the write in flight = %v, want it acknowledged before the tombstone", err)
		}
		if err := <-dropped; err != nil {
			t.Fatal(err)
		}
		if _, err := r.StoreData(ctx, "late", strings.NewReader("x")); !errors.Is(err, tenant.ErrTenantDeleted) {
			t.Fatalf("a write after Drop = %v", err)
		}
	})
}

// within polls cond every 5 ms until it holds or limit passes.
func within(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

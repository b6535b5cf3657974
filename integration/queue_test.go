package integration

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/integration/conformance"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
	datastorage "schneider.vip/retryspool/storage/data"
	metastorage "schneider.vip/retryspool/storage/meta"
)

// statementCounter counts the statements sent through a pool.
// statementCounter counts the statements a pool sends: n for tenants'
// data, and apart, the change notifications (pg_notify: the listener's
// probes and the announcements of changes), which cost per host, not per
// tenant.
type statementCounter struct{ n, notify atomic.Int64 }

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.Contains(d.SQL, "pg_notify") {
		c.notify.Add(1)
	} else {
		c.n.Add(1)
	}
	return ctx
}
func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// scanStates are the states RetrySpool's scheduler scans every 10 ms.
var scanStates = []metastorage.QueueState{metastorage.StateDeferred, metastorage.StateIncoming, metastorage.StateBounce}

// scan does what RetrySpool's scheduler does on every tick for one queue:
// an iterator per state, drained until an empty ID, deferred messages
// filtered by NextRetry. It returns the messages it would hand out.
func scan(ctx context.Context, b metastorage.Backend) ([]string, error) {
	var due []string
	now := time.Now()
	for _, state := range scanStates {
		it, err := b.NewMessageIterator(ctx, state, 400)
		if err != nil {
			return nil, err
		}
		for {
			md, _, err := it.Next(ctx)
			if err != nil {
				it.Close()
				return nil, err
			}
			if md.ID == "" {
				break
			}
			if state != metastorage.StateDeferred || !md.NextRetry.After(now) {
				due = append(due, md.ID)
			}
		}
		it.Close()
	}
	return due, nil
}

// scheduler runs scan for every tenant's backend every interval until ctx
// ends, and calls seen for each message handed out.
func scheduler(ctx context.Context, backends []metastorage.Backend, interval time.Duration, seen func(tenant int, id string), errs chan<- error) {
	var wg sync.WaitGroup
	for i, b := range backends {
		wg.Go(func() {
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				due, err := scan(ctx, b)
				if err != nil && ctx.Err() == nil {
					errs <- err
					return
				}
				for _, id := range due {
					seen(i, id)
				}
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
	wg.Wait()
}

// TestIdleQueuesCostNoStatements runs the scheduler's scan loop (every 10
// ms: deferred, incoming, bounce) for 50 pinned tenants, half of them with
// deferred messages that are not due, and counts the statements that reach
// the server once every state was read once: none while nothing changes.
// Then it checks how soon changes are seen: a message enqueued on this
// host at the next scan, one enqueued on another host within 1 s, and a
// deferred message within 1 s of its NextRetry.
func TestIdleQueuesCostNoStatements(t *testing.T) {
	t.Parallel()
	const n = 50
	rb := setupRouter(t, schema.SharedTable)
	counter := &statementCounter{}
	f := rb.factory.WithQueryTracer(counter)
	bg := context.Background()
	backends := make([]metastorage.Backend, n)
	for i := range n {
		b := newMeta(t, f.ForTenant(fmt.Sprintf("idle-%02d", i)))
		backends[i] = b
		if i%2 == 0 {
			md := conformance.Meta(i, metastorage.StateDeferred)
			md.NextRetry = time.Now().Add(time.Hour)
			conformance.MustStoreMeta(t, b, bg, "later", md)
		}
	}
	// The views are trusted once the listener hears its first probe;
	// until then every scan reads the database and nothing is kept.
	admin := newAdmin(t, f)
	for deadline := time.Now().Add(10 * time.Second); !admin.PoolStats().Listening; {
		if time.Now().After(deadline) {
			t.Fatal("the listener did not hear its probe within 10 s")
		}
		time.Sleep(time.Millisecond) // polling the listener's state
	}
	for _, b := range backends { // the first scan of each state loads it
		if _, err := scan(bg, b); err != nil {
			t.Fatal(err)
		}
	}

	var (
		mu    sync.Mutex
		first = map[string]time.Time{} // "tenant/id" -> first handed out
	)
	seen := func(i int, id string) {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := first[fmt.Sprint(i, "/", id)]; !ok {
			first[fmt.Sprint(i, "/", id)] = time.Now()
		}
	}
	ctx, cancel := context.WithCancel(bg)
	errs := make(chan error, n)
	done := make(chan struct{})
	go func() { scheduler(ctx, backends, 10*time.Millisecond, seen, errs); close(done) }()
	// The measured idle period (the load's duration, not synchronisation).
	// A probe that comes back late (a loaded machine: the suite's other
	// tests share 2 cores) empties the views, rightly, and the next scans
	// read the database: such a window is measured again, up to 3 times.
	// Statements while the views were never dropped fail the test.
	var idleStatements, probes, dropped int64
	for window := 1; ; window++ {
		before, probesBefore, droppedBefore := counter.n.Load(), counter.notify.Load(), admin.PoolStats().ViewsDropped
		idle := time.NewTimer(2 * time.Second)
		<-idle.C
		idleStatements, probes = counter.n.Load()-before, counter.notify.Load()-probesBefore
		dropped = admin.PoolStats().ViewsDropped - droppedBefore
		if idleStatements == 0 || dropped == 0 || window == 3 {
			break
		}
		t.Logf("idle window %d: %d statements after the views were dropped %d times (a late probe); measuring again", window, idleStatements, dropped)
	}

	waitSeen := func(key string, limit time.Duration) time.Time {
		t.Helper()
		deadline := time.Now().Add(limit)
		for time.Now().Before(deadline) {
			mu.Lock()
			at, ok := first[key]
			mu.Unlock()
			if ok {
				return at
			}
			time.Sleep(time.Millisecond) // polling the scheduler's findings
		}
		t.Fatalf("%s not handed out within %v", key, limit)
		return time.Time{}
	}
	// This host: seen at the next scan.
	start := time.Now()
	conformance.MustStoreMeta(t, backends[1], bg, "local", conformance.Meta(1, metastorage.StateIncoming))
	local := waitSeen("1/local", time.Second).Sub(start)
	// Another host: a Factory of its own, as another process would be.
	other := newMeta(t, tenant.NewFactory(rb.dsn).WithIsolation(schema.SharedTable).WithConnectionLimits(2, 0).ForTenant("idle-03"))
	start = time.Now()
	conformance.MustStoreMeta(t, other, bg, "remote", conformance.Meta(2, metastorage.StateIncoming))
	remote := waitSeen("3/remote", time.Second).Sub(start)
	// A deferred message comes due.
	md := conformance.Meta(3, metastorage.StateDeferred)
	md.NextRetry = time.Now().Add(300 * time.Millisecond)
	conformance.MustStoreMeta(t, backends[5], bg, "soon", md)
	dueLate := waitSeen("5/soon", 2*time.Second).Sub(md.NextRetry)
	cancel()
	<-done
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d idle queues: %d statements and %d listener probes in 2 s; a change seen after %v on this host, %v from another; a deferred message handed out %v after it came due",
		n, idleStatements, probes, local.Round(time.Millisecond), remote.Round(time.Millisecond), dueLate.Round(time.Millisecond))
	if idleStatements > 0 {
		t.Errorf("idle queues sent %d statements in 2 s (the views dropped %d times meanwhile), want none", idleStatements, dropped)
	}
	if probes > 3 {
		t.Errorf("the listener sent %d probes in 2 s, want one a second", probes)
	}
	if dueLate > time.Second {
		t.Errorf("a deferred message was handed out %v after its NextRetry, want within 1 s", dueLate)
	}
}

// BenchmarkIdleScans runs the scheduler's scan loop for 1 000 idle pinned
// queues, half of them holding deferred messages that are not due, and
// reports the statements per second that reach the server.
func BenchmarkIdleScans(b *testing.B) {
	for _, mode := range []schema.Isolation{schema.SharedTable, schema.SchemaPerTenant} {
		b.Run(fmt.Sprintf("mode=%v/tenants=1000", mode), func(b *testing.B) {
			const n = 1000
			counter := &statementCounter{}
			dsn := benchDatabase(b)
			f := tenant.NewFactory(dsn).WithIsolation(mode).WithTableName(fmt.Sprintf("idle_%d", int(mode))).
				WithConnectionLimits(16, 16).WithQueryTracer(counter)
			bg := context.Background()
			backends := make([]metastorage.Backend, n)
			parallelTenants(b, n, func(i int, id string) error {
				m, err := f.ForTenant(id).Meta().Create()
				if err != nil {
					return err
				}
				backends[i] = m
				if i%2 == 0 {
					md := conformance.Meta(i, metastorage.StateDeferred)
					md.NextRetry = time.Now().Add(time.Hour)
					return m.StoreMeta(bg, "later", md)
				}
				return nil
			})
			defer func() {
				for _, m := range backends {
					_ = m.Close()
				}
			}()
			for _, m := range backends {
				if _, err := scan(bg, m); err != nil {
					b.Fatal(err)
				}
			}
			var perSecond float64
			for b.Loop() {
				ctx, cancel := context.WithTimeout(bg, 5*time.Second)
				errs := make(chan error, n)
				before := counter.n.Load()
				start := time.Now()
				scheduler(ctx, backends, 10*time.Millisecond, func(int, string) {}, errs)
				perSecond = float64(counter.n.Load()-before) / time.Since(start).Seconds()
				cancel()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
			}
			b.ReportMetric(perSecond, "statements/s")
		})
	}
}

// BenchmarkQueueCycle runs queueCycle with 16 workers, 1 KiB bodies, a
// random tenant of 1, 100 or 1 000 per cycle, one pinned data backend and
// one pinned metadata backend per tenant, all on one pool of 16; it
// reports cycles/s, the p99 of a cycle, and the statements (round trips)
// per cycle: 8 on the caller's path, plus the batched change
// notifications that the Factory sends to other hosts.
func BenchmarkQueueCycle(b *testing.B) {
	body := bytes.Repeat([]byte("q"), 1<<10)
	for _, mode := range modes {
		for _, n := range []int{1, 100, 1000} {
			b.Run(fmt.Sprintf("mode=%v/tenants=%d", mode, n), func(b *testing.B) {
				counter := &statementCounter{}
				dsn := benchDatabase(b)
				f := tenant.NewFactory(dsn).WithIsolation(mode).WithTableName(fmt.Sprintf("queue_%d_%d", int(mode), n)).
					WithTableSchema(fmt.Sprintf("queue_tables_%d_%d", int(mode), n)).WithConnectionLimits(16, 16).WithQueryTracer(counter)
				datas := make([]datastorage.Backend, n)
				metas := make([]metastorage.Backend, n)
				parallelTenants(b, n, func(i int, id string) error {
					p := f.ForTenant(id)
					d, err := p.Create()
					if err != nil {
						return err
					}
					m, err := p.Meta().Create()
					if err != nil {
						return err
					}
					datas[i], metas[i] = d, m
					return conformance.QueueCycle(context.Background(), d, m, "warm", body) // creates and caches the tenant
				})
				defer func() {
					for i := range n {
						_ = datas[i].Close()
						_ = metas[i].Close()
					}
				}()
				var (
					cycles   atomic.Int64
					failures atomic.Int64
					mu       sync.Mutex
					lat      []time.Duration
				)
				before := counter.n.Load()
				start := time.Now()
				for b.Loop() {
					var wg sync.WaitGroup
					end := time.Now().Add(5 * time.Second)
					for w := range benchClients {
						wg.Go(func() {
							var local []time.Duration
							for i := 0; time.Now().Before(end); i++ {
								k := (w*7919 + i*31) % n
								t0 := time.Now()
								if err := conformance.QueueCycle(context.Background(), datas[k], metas[k], fmt.Sprintf("c%d-%d", w, i), body); err != nil {
									failures.Add(1)
									b.Error(err)
									return
								}
								local = append(local, time.Since(t0))
								cycles.Add(1)
							}
							mu.Lock()
							lat = append(lat, local...)
							mu.Unlock()
						})
					}
					wg.Wait()
				}
				elapsed := time.Since(start)
				slices.Sort(lat)
				b.ReportMetric(float64(cycles.Load())/elapsed.Seconds(), "cycles/s")
				b.ReportMetric(float64(percentile(lat, 99).Microseconds())/1000, "p99-ms")
				b.ReportMetric(float64(counter.n.Load()-before)/float64(max(cycles.Load(), 1)), "statements/cycle")
				b.ReportMetric(float64(failures.Load()), "failures")
			})
		}
	}
}

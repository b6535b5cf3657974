//go:build citus

package citus

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgtenant/pgtenant/integration/conformance"
	"github.com/pgtenant/pgtenant/internal/procmem"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
	datastorage "schneider.vip/retryspool/storage/data"
	metastorage "schneider.vip/retryspool/storage/meta"
)

// BenchmarkCitusQueueCycle runs RetrySpool's cycle for one delivered
// message (conformance.QueueCycle) with 16 workers, 1 KiB bodies, on a
// random tenant of 1, 100 or 1 000 per cycle, one pinned data and one
// pinned metadata backend per tenant, all on one pool of 16: on the
// cluster, and, when PGTENANT_CITUS_PLAIN_DSN names one, on a plain
// PostgreSQL server for comparison, in the same run. It reports cycles/s
// on each, their ratio, the p99 of a cycle on the cluster, and the
// workers' private memory per backend that served it.
func BenchmarkCitusQueueCycle(b *testing.B) {
	plain := os.Getenv("PGTENANT_CITUS_PLAIN_DSN")
	for _, mode := range modes {
		for _, n := range []int{1, 100, 1000} {
			b.Run(fmt.Sprintf("mode=%v/tenants=%d", mode, n), func(b *testing.B) {
				store := fmt.Sprintf("bench_%d_%d", int(mode), n)
				var citus, base float64
				var p99 time.Duration
				for b.Loop() {
					citus, p99 = queueLoad(b, dsn, mode, store, n)
					if plain != "" {
						base, _ = queueLoad(b, plain, mode, name(store), n)
					}
				}
				b.ReportMetric(citus, "citus-cycles/s")
				b.ReportMetric(float64(p99.Microseconds())/1000, "citus-p99-ms")
				if base > 0 {
					b.ReportMetric(base, "plain-cycles/s")
					b.ReportMetric(citus/base, "citus/plain")
				}
				if mib, k, err := workerMemory(b); err == nil {
					b.ReportMetric(mib, "worker-MiB/backend")
					b.Logf("worker backends: %d, %.1f MiB private each", k, mib)
				} else {
					b.Logf("worker memory: %v", err)
				}
			})
		}
	}
}

// queueLoad provisions n tenants of a store on dsn, warms each with one
// cycle, then runs cycles from 16 workers for 5 s and returns cycles/s and
// the p99 of a cycle.
func queueLoad(b *testing.B, dsn string, mode schema.Isolation, store string, n int) (float64, time.Duration) {
	body := bytes.Repeat([]byte("q"), 1<<10)
	f := tenant.NewFactory(dsn).WithIsolation(mode).WithTableName(name(store)).WithConnectionLimits(16, 16)
	datas := make([]datastorage.Backend, n)
	metas := make([]metastorage.Backend, n)
	var wg sync.WaitGroup
	next := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range next {
				p := f.ForTenant(fmt.Sprintf("tenant-%05d", i))
				d, err := p.Create()
				if err != nil {
					b.Error(err)
					continue
				}
				m, err := p.Meta().Create()
				if err != nil {
					b.Error(err)
					continue
				}
				datas[i], metas[i] = d, m
				if err := conformance.QueueCycle(context.Background(), d, m, "warm", body); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	defer func() {
		for i := range n {
			_ = datas[i].Close()
			_ = metas[i].Close()
		}
	}()
	var (
		cycles atomic.Int64
		mu     sync.Mutex
		lat    []time.Duration
	)
	end := time.Now().Add(5 * time.Second)
	start := time.Now()
	for w := range 16 {
		wg.Go(func() {
			var local []time.Duration
			for i := 0; time.Now().Before(end); i++ {
				k := (w*7919 + i*31) % n
				t0 := time.Now()
				if err := conformance.QueueCycle(context.Background(), datas[k], metas[k], fmt.Sprintf("c%d-%d", w, i), body); err != nil {
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
	rate := float64(cycles.Load()) / time.Since(start).Seconds()
	slices.Sort(lat)
	var p99 time.Duration
	if len(lat) > 0 {
		p99 = lat[len(lat)*99/100]
	}
	return rate, p99
}

// workerMemory returns the average private memory (Private_Clean +
// Private_Dirty of /proc/PID/smaps_rollup), in MiB, of the workers'
// backends that served the coordinator (application_name citus_internal),
// and how many. The cluster's nodes are processes on this machine.
func workerMemory(b *testing.B) (float64, int, error) {
	ctx := context.Background()
	p, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return 0, 0, err
	}
	defer p.Close()
	rows, err := p.Query(ctx, `SELECT result FROM run_command_on_workers($$SELECT string_agg(pid::text, ',') FROM pg_stat_activity
		WHERE application_name LIKE 'citus_internal%' AND backend_type = 'client backend'$$)`)
	if err != nil {
		return 0, 0, err
	}
	var pids []string
	for rows.Next() {
		var r *string
		if err := rows.Scan(&r); err != nil {
			return 0, 0, err
		}
		if r != nil && *r != "" {
			pids = append(pids, strings.Split(*r, ",")...)
		}
	}
	if err := rows.Err(); err != nil {
		return 0, 0, err
	}
	var total int64
	k := 0
	for _, pid := range pids {
		kb, err := procmem.PrivateKB(pid)
		if err != nil {
			continue
		}
		total += kb
		k++
	}
	if k == 0 {
		return 0, 0, fmt.Errorf("no worker backend found in /proc")
	}
	return float64(total) / 1024 / float64(k), k, nil
}

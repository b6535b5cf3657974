package integration

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgtenant/pgtenant/backend"
	"github.com/pgtenant/pgtenant/internal/pgtest"
	"github.com/pgtenant/pgtenant/internal/procmem"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
)

// BenchmarkAffinity compares store+read+delete cycles of 1 KiB from 16
// clients, each cycle for a random tenant, on pools of 16 connections, at
// 1 000 tenants in every mode, at one tenant in SchemaPerTenant (a tenant
// alone spreads over the whole pool), and at 10 000 in the per-tenant
// modes with PGTENANT_BENCH_10K=1 (only at 10 000 with "only"). Variants:
// the plain backend on one table ("plain"), the router with any
// connection for any tenant ("any", affinity off), and the router with
// groups of 1 (the default), 2 and 4 connections ("aff1", "aff2",
// "aff4"). Every variant first runs for PGTENANT_BENCH_WARM (20 s) on its
// own; then the variants run in interleaved rounds (see compareRounds),
// which also report p50 and p99, and the CPU time that each variant's
// server backends spent per cycle in them. Afterwards it reports the
// private memory of each variant's server backends (from /proc, the
// server being a local container): the catalog, relation and plan caches
// that affinity bounds.
func BenchmarkAffinity(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1<<10)
	warmFor := 20 * time.Second
	if v, err := time.ParseDuration(os.Getenv("PGTENANT_BENCH_WARM")); err == nil {
		warmFor = v
	}
	type size struct {
		mode schema.Isolation
		n    int
	}
	sizes := []size{{schema.SchemaPerTenant, 1}, {schema.SchemaPerTenant, 1000}, {schema.TablePerTenant, 1000}, {schema.SharedTable, 1000}}
	switch os.Getenv("PGTENANT_BENCH_10K") {
	case "1":
		sizes = append(sizes, size{schema.SchemaPerTenant, 10000}, size{schema.TablePerTenant, 10000})
	case "only":
		sizes = []size{{schema.SchemaPerTenant, 10000}, {schema.TablePerTenant, 10000}}
	}
	for _, sz := range sizes {
		b.Run(fmt.Sprintf("mode=%v/tenants=%d", sz.mode, sz.n), func(b *testing.B) {
			ctx := context.Background()
			dsn := benchDatabase(b)
			base := ownPool(benchFactory(dsn, sz.mode)).WithConnectionAffinity(0)
			admin, err := openHost(base)
			if err != nil {
				b.Fatal(err)
			}
			defer admin.Close()
			ctxs := make([]context.Context, sz.n)
			parallelTenants(b, sz.n, func(i int, id string) error {
				ctxs[i] = tenant.WithTenant(ctx, id)
				return admin.Provision(ctx, id)
			})
			names := []string{"plain", "any", "aff1", "aff2", "aff4"}
			affinities := map[string]int{"any": 0, "aff1": 1, "aff2": 2, "aff4": 4}
			app := func(name string) string { return fmt.Sprintf("affinity_%s_%v_%d", name, sz.mode, sz.n) }
			plain, err := backend.NewFactory(withParam(b, dsn, "application_name", app("plain"))).
				WithConnectionLimits(benchClients, benchClients).WithTableName("bench_affinity_base").Open(ctx)
			if err != nil {
				b.Fatal(err)
			}
			defer plain.Close()
			ops := []func(w, i int) error{
				func(w, i int) error { return cycle(ctx, plain, "p"+strconv.Itoa(w)+"-"+strconv.Itoa(i), body) },
			}
			var routers []*host
			for _, name := range names[1:] {
				r, err := openHost(ownPool(benchFactory(withParam(b, dsn, "application_name", app(name)), sz.mode)).
					WithConnectionAffinity(affinities[name]))
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close()
				routers = append(routers, r)
				ops = append(ops, func(w, i int) error {
					return cycle(ctxs[rand.IntN(len(ctxs))], r, name+strconv.Itoa(w)+"-"+strconv.Itoa(i), body)
				})
			}
			for k, op := range ops {
				start := time.Now()
				rate := runFor(b, warmFor, op)
				b.Logf("warm-up %s: %.0f cycles/s over %v", names[k], rate, time.Since(start).Round(time.Second))
			}
			// Latencies of the rounds only, per variant.
			lats := make([]latencies, len(ops))
			timed := make([]func(w, i int) error, len(ops))
			for k, op := range ops {
				timed[k] = func(w, i int) error {
					t0 := time.Now()
					err := op(w, i)
					lats[k].add(time.Since(t0))
					return err
				}
			}
			cpuBefore := make([]float64, len(names))
			for k, name := range names {
				if procs, err := backendProcs(b, app(name)); err == nil {
					cpuBefore[k] = cpuSeconds(procs)
				}
			}
			compareRounds(b, names, timed)
			// Server CPU per cycle: the variant's backends' CPU time over
			// the rounds, divided by the cycles it ran in them.
			for k, name := range names {
				procs, err := backendProcs(b, app(name))
				if err != nil || len(lats[k].d) == 0 {
					continue
				}
				ms := (cpuSeconds(procs) - cpuBefore[k]) * 1000 / float64(len(lats[k].d))
				b.ReportMetric(ms, name+"-server-cpu-ms/cycle")
			}
			for k, name := range names {
				p50, p99 := lats[k].quantiles()
				b.ReportMetric(float64(p50.Microseconds())/1000, name+"-p50-ms")
				b.ReportMetric(float64(p99.Microseconds())/1000, name+"-p99-ms")
			}
			if mib, backends, err := backendMemory(b, app("plain")); err == nil {
				b.ReportMetric(mib, "plain-MiB/backend")
				b.Logf("plain: %d backends, %.1f MiB private memory each (median)", backends, mib)
			}
			for k, name := range names[1:] {
				mib, backends, err := backendMemory(b, app(name))
				if err != nil {
					b.Logf("server memory of %s: %v", name, err)
					continue
				}
				b.ReportMetric(mib, name+"-MiB/backend")
				b.Logf("%s: %d backends, %.1f MiB private memory each (median); %d groups, %d escapes",
					name, backends, mib, routers[k].PoolStats().Groups, routers[k].PoolStats().Escapes)
			}
		})
	}
}

// withParam returns dsn with a connection parameter set.
func withParam(b *testing.B, dsn, key, value string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		b.Fatal(err)
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

// backendProcs returns the /proc directories of the server backends whose
// application_name is app. The server runs in the test's container on
// this machine: its backends are processes in the container's PID
// namespace, found by their NSpid.
func backendProcs(b *testing.B, app string) ([]string, error) {
	ctx := context.Background()
	c := pgtest.Container(b)
	info, err := c.Inspect(ctx)
	if err != nil {
		return nil, err
	}
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", info.State.Pid))
	if err != nil {
		return nil, err
	}
	pool := pgtest.NewPool(b, benchDatabase(b), nil)
	rows, err := pool.Query(ctx, "SELECT pid FROM pg_catalog.pg_stat_activity WHERE application_name OPERATOR(pg_catalog.=) $1", app)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for rows.Next() {
		var pid int
		if err := rows.Scan(&pid); err != nil {
			return nil, err
		}
		want[strconv.Itoa(pid)] = true
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	all, _ := filepath.Glob("/proc/[0-9]*")
	var procs []string
	for _, p := range all {
		if l, err := os.Readlink(p + "/ns/pid"); err != nil || l != ns {
			continue
		}
		status, err := os.ReadFile(p + "/status")
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(status), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "NSpid:" && want[f[len(f)-1]] {
				procs = append(procs, p)
			}
		}
	}
	if len(procs) == 0 {
		return nil, fmt.Errorf("none of %d backends of %s found in /proc", len(want), app)
	}
	return procs, nil
}

// backendMemory returns the median private memory (Private_Clean +
// Private_Dirty of /proc/PID/smaps_rollup), in MiB, of the server backends
// whose application_name is app, and how many there are.
func backendMemory(b *testing.B, app string) (float64, int, error) {
	procs, err := backendProcs(b, app)
	if err != nil {
		return 0, 0, err
	}
	if len(procs) == 0 {
		return 0, 0, fmt.Errorf("no server backends named %q", app)
	}
	kbs := make([]int64, 0, len(procs))
	for _, p := range procs {
		kb, err := procmem.PrivateKB(filepath.Base(p))
		if err != nil {
			return 0, 0, err
		}
		kbs = append(kbs, kb)
	}
	slices.Sort(kbs)
	mid := kbs[len(kbs)/2]
	if len(kbs)%2 == 0 {
		mid = (kbs[len(kbs)/2-1] + mid) / 2
	}
	return float64(mid) / 1024, len(procs), nil
}

// cpuSeconds is the user and system CPU time of processes procs (fields
// 14 and 15 of /proc/PID/stat, in clock ticks of 1/100 s).
func cpuSeconds(procs []string) float64 {
	var ticks int64
	for _, p := range procs {
		stat, err := os.ReadFile(p + "/stat")
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses.
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			st, _ := strconv.ParseInt(f[12], 10, 64)
			ticks += u + st
		}
	}
	return float64(ticks) / 100
}

// latencies collects durations from many goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// quantiles returns the median and the 99th percentile.
func (l *latencies) quantiles() (p50, p99 time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0, 0
	}
	slices.Sort(l.d)
	return l.d[len(l.d)/2], l.d[len(l.d)*99/100]
}

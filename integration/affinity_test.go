package integration

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgtenant/pgtenant/internal/affinity"
	"github.com/pgtenant/pgtenant/internal/pgtest"
	"github.com/pgtenant/pgtenant/tenant"
)

// TestAffinityFairness floods one tenant from 32 goroutines on a pool of 8
// connections in groups of DefaultAffinity, and measures four tenants that
// share its groups (two rank the flood's first group first, two its
// second): the
// p99 of their store+read+delete cycles with the flood stays within 3× of
// their p99 without it, both measured in this run, or within 1.3× of what
// a flood on connections of its own costs them through the server (on 2
// cores the flood's CPU and WAL flushes slow everyone, which no pool can
// prevent). The same is measured without affinity (one pool, pgxpool's
// own queue), where the victims wait behind the flood's goroutines: that
// ratio must be worse, or the victims' p99 beside the flood 1.5× theirs
// with affinity, which shows what the fair gates do.
func TestAffinityFairness(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	groups := 8 / tenant.DefaultAffinity
	floodFirst, floodSecond := affinity.Rank("flood", groups)
	var victims []string
	for i := 0; len(victims) < 4; i++ {
		id := "victim-" + strconv.Itoa(i)
		first, _ := affinity.Rank(id, groups)
		if (len(victims) < 2 && first == floodFirst) || (len(victims) >= 2 && first == floodSecond) {
			victims = append(victims, id)
		}
	}
	// ratio measures the victims on a Router of f, the flood on floodR, or
	// on the victims' Router when floodR is nil.
	ratio := func(t *testing.T, f *tenant.Factory, floodF *tenant.Factory) (float64, time.Duration) {
		r := newHost(t, f)
		fr := r
		if floodF != nil {
			fr = newHost(t, floodF)
		}
		ctx := context.Background()
		for _, id := range append([]string{"flood"}, victims...) {
			if err := r.Provision(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		body := bytes.Repeat([]byte("v"), 1<<10)
		// measure runs 50 sequential cycles per victim and adds their
		// latencies to lat.
		measure := func(lat *[]time.Duration) {
			var mu sync.Mutex
			var wg sync.WaitGroup
			for _, id := range victims {
				wg.Go(func() {
					vctx := tenant.WithTenant(ctx, id)
					for i := range 50 {
						start := time.Now()
						if err := cycle(vctx, r, "m-"+strconv.Itoa(i), body); err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						*lat = append(*lat, time.Since(start))
						mu.Unlock()
					}
				})
			}
			wg.Wait()
		}
		// flood runs fn beside 32 goroutines cycling on tenant "flood",
		// started once they have done 64 cycles between them.
		var floods atomic.Int64
		flood := func(fn func()) {
			stop := make(chan struct{})
			running := make(chan struct{})
			var once sync.Once
			var wg sync.WaitGroup
			fctx := tenant.WithTenant(ctx, "flood")
			start := floods.Load()
			for g := range 32 {
				wg.Go(func() {
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						if err := cycle(fctx, fr, fmt.Sprintf("f-%d-%d", g, i), body); err != nil {
							t.Error(err)
							once.Do(func() { close(running) })
							return
						}
						if floods.Add(1)-start >= 64 {
							once.Do(func() { close(running) })
						}
					}
				})
			}
			<-running
			fn()
			close(stop)
			wg.Wait()
		}
		var warm, quiet, flooded []time.Duration
		measure(&warm) // statements prepared, plans settled
		// Alternate, so that the machine's drift falls on both alike.
		for range 4 {
			measure(&quiet)
			flood(func() { measure(&flooded) })
		}
		p99 := func(lat []time.Duration) time.Duration {
			slices.Sort(lat)
			return lat[len(lat)*99/100]
		}
		alone, beside := p99(quiet), p99(flooded)
		t.Logf("victims' p99 over %d cycles: %v alone, %v beside the flood (%.1f×); flood cycles %d; pool %+v",
			len(quiet), alone, beside, float64(beside)/float64(alone), floods.Load(), r.PoolStats())
		return float64(beside) / float64(alone), beside
	}
	base := tenant.NewFactory(dsn).WithIsolation(tenant.SchemaPerTenant).WithConnectionLimits(8, 8)
	fair, fairBeside := ratio(t, base, nil) // affinity is on by default
	unfair, unfairBeside := ratio(t, base.WithConnectionAffinity(0), nil)
	// What the flood costs the victims through the server alone (CPU and
	// WAL flushes on this machine), with no connection in common: the
	// flood on a pool of its own, as large as its first and second choice
	// of group, the share it gets beside them with affinity.
	server, _ := ratio(t, base.WithConnectionAffinity(0), base.WithConnectionAffinity(0).WithConnectionLimits(2*tenant.DefaultAffinity, 2*tenant.DefaultAffinity))
	if limit := max(3, 1.3*server); fair > limit {
		t.Errorf("with affinity the victims' p99 grew %.1f× beside the flood, want at most %.1f× "+
			"(3×, or 1.3× the %.1f× that a flood on separate connections costs)", fair, limit, server)
	}
	// The gates must show: a larger growth without them, or, when the
	// quiet p99 of one run was itself inflated by the machine's noise (a
	// few slow cycles of its 800 set it), a p99 beside the flood at least
	// 1.5× the one with them.
	if unfair <= fair && float64(unfairBeside) < 1.5*float64(fairBeside) {
		t.Errorf("without affinity the victims' p99 grew %.1f× (%v beside the flood), with it %.1f× (%v): the fair gates made no difference",
			unfair, unfairBeside, fair, fairBeside)
	}
}

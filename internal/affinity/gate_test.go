package affinity

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestGateRoundRobin queues five waiters of a flooding tenant, then one of
// a quiet tenant, on a gate of one: freed slots alternate between them, so
// the quiet one is served second, not sixth.
func TestGateRoundRobin(t *testing.T) {
	g := newGate(1)
	if w := g.enqueue("x"); w != nil {
		t.Fatal("the first holder waited")
	}
	type pending struct {
		key string
		w   *waiter
	}
	var ws []pending
	for range 5 {
		ws = append(ws, pending{"flood", g.enqueue("flood")})
	}
	ws = append(ws, pending{"quiet", g.enqueue("quiet")})
	var order []string
	holder := "x"
	for range ws {
		g.release(holder)
		for i, p := range ws {
			if p.w != nil && p.w.granted {
				order = append(order, p.key)
				holder = p.key
				ws[i].w = nil
			}
		}
	}
	want := []string{"flood", "quiet", "flood", "flood", "flood", "flood"}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("served %v, want %v", order, want)
	}
	g.release(holder)
	if g.free != 1 || g.waiting != 0 || len(g.ring) != 0 || len(g.queues) != 0 || len(g.held) != 0 {
		t.Fatalf("gate not empty at the end: %+v", g)
	}
}

// TestGateFewestHeldFirst: a tenant holding every slot of a gate with more
// waiters queued, and a tenant arriving after them: the next freed slot
// goes to the newcomer, who holds none.
func TestGateFewestHeldFirst(t *testing.T) {
	g := newGate(2)
	g.enqueue("flood")
	g.enqueue("flood")
	var floods []*waiter
	for range 3 {
		floods = append(floods, g.enqueue("flood"))
	}
	quiet := g.enqueue("quiet")
	g.release("flood")
	if !quiet.granted {
		t.Fatal("the freed slot went to the tenant that already held the other")
	}
	g.release("flood")
	if !floods[0].granted {
		t.Fatal("the second freed slot did not go to the flood's first waiter")
	}
	if g.held["flood"] != 1 || g.held["quiet"] != 1 {
		t.Fatalf("held: %v", g.held)
	}
}

// TestGateCancel: a waiter that gives up leaves the queue; one granted
// just before it gave up holds the slot.
func TestGateCancel(t *testing.T) {
	g := newGate(1)
	g.enqueue("a")
	w1 := g.enqueue("b")
	w2 := g.enqueue("c")
	if g.cancel("b", w1) {
		t.Fatal("a waiter never granted reports a slot")
	}
	g.release("a") // goes to c, b having left
	if !w2.granted {
		t.Fatal("the slot did not go to the next waiter")
	}
	if !g.cancel("c", w2) {
		t.Fatal("a granted waiter that cancels does not hold its slot")
	}
	g.release("c")
	if g.free != 1 || g.waiting != 0 || len(g.ring) != 0 || len(g.held) != 0 {
		t.Fatalf("gate state after cancels: %+v", g)
	}
	if !g.tryAcquire("d") || g.tryAcquire("e") {
		t.Fatal("tryAcquire on a gate of one")
	}
}

// TestChoices: two different groups per key, stable, spread evenly, and
// adding a group moves only keys that rank the new group first or second.
func TestChoices(t *testing.T) {
	counts := make([]int, 8)
	moved := 0
	const n = 8000
	for i := range n {
		key := fmt.Sprintf("tenant-%d", i)
		a, b := Rank(key, 8)
		if a == b {
			t.Fatalf("%s: both choices are group %d", key, a)
		}
		if a2, b2 := Rank(key, 8); a2 != a || b2 != b {
			t.Fatalf("%s: choices changed between calls", key)
		}
		counts[a]++
		c, d := Rank(key, 9)
		if c != 8 && d != 8 {
			if c != a || d != b {
				t.Fatalf("%s moved from (%d,%d) to (%d,%d) though group 8 is not among its choices", key, a, b, c, d)
			}
		} else {
			moved++
		}
	}
	for g, c := range counts {
		if c < n/8*8/10 || c > n/8*12/10 {
			t.Errorf("group %d is the first choice of %d of %d keys", g, c, n)
		}
	}
	// A ninth group is in the top two of about 2/9 of the keys.
	if moved < n*2/9*8/10 || moved > n*2/9*12/10 {
		t.Errorf("adding a group moved %d of %d keys, want about %d", moved, n, n*2/9)
	}
	if a, b := Rank("x", 1); a != 0 || b != 0 {
		t.Fatalf("one group: choices %d, %d", a, b)
	}
}

// testPools is a Pools of n groups of one slot each, without connections:
// enough for admission, which never touches a pool.
func testPools(n int) *Pools {
	p := &Pools{size: 1, total: n, held: map[string]int{}, active: map[string]int{}, recent: map[string]time.Time{}}
	for range n {
		p.groups = append(p.groups, &group{gate: newGate(1)})
	}
	return p
}

func TestAdmitSpreadsTheOnlyTenant(t *testing.T) {
	p := testPools(4)
	d := p.For("solo").(*db)
	var got []int
	for range 4 {
		g, _, err := d.acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, slices.Index(p.groups, g))
	}
	if want := d.order; !slices.Equal(got, want) {
		t.Errorf("the only tenant got groups %v, want all four in its order %v", got, want)
	}
}

func TestAdmitKeepsTenantsInTheirGroups(t *testing.T) {
	p := testPools(8)
	// Eight tenants active: each one's share is one slot.
	for i := range 7 {
		p.enter("other-" + strconv.Itoa(i))
		p.leave("other-"+strconv.Itoa(i), false)
	}
	d := p.For("busy").(*db)
	g, _, err := d.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if g != p.groups[d.order[0]] {
		t.Fatalf("first statement on group %d, want its first choice %d", slices.Index(p.groups, g), d.order[0])
	}
	// Six groups are free, but the tenant holds its share: it waits (and
	// gives up before EscapeAfter).
	ctx, cancel := context.WithTimeout(context.Background(), EscapeAfter/2)
	defer cancel()
	if g, _, err := d.acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second statement got group %d (err %v), want it to wait for its own groups", slices.Index(p.groups, g), err)
	}
}

// TestSharedTakesAnyFreeGroup holds all groups but one busy, without
// waiters: a statement of no tenant takes the free one at once instead of
// queueing behind a busy one.
func TestSharedTakesAnyFreeGroup(t *testing.T) {
	p := testPools(4)
	for i := range 3 {
		if !p.groups[i].gate.tryAcquire("busy") {
			t.Fatal("setup")
		}
	}
	for range 4 { // from every rotating start
		ctx, cancel := context.WithTimeout(context.Background(), EscapeAfter/2)
		g, release, err := p.Shared().(*db).acquire(ctx)
		cancel()
		if err != nil {
			t.Fatalf("waited with a group free: %v", err)
		}
		if g != p.groups[3] {
			t.Fatalf("got group %d, want the free one", slices.Index(p.groups, g))
		}
		release()
	}
}

package integration

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgtenant/pgtenant/integration/conformance"
	"github.com/pgtenant/pgtenant/internal/pgtest"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
	datastorage "schneider.vip/retryspool/storage/data"
	metastorage "schneider.vip/retryspool/storage/meta"
)

// The tests of the metadata guarantees (README, "Metadata guarantees"):
// what a queue host's metadata backends store, refuse and cache.

// stateIDs drains an iterator over state, as RetrySpool's scheduler does,
// and returns the message ids it handed out.
func stateIDs(t testing.TB, b metastorage.Backend, ctx context.Context, state metastorage.QueueState) []string {
	t.Helper()
	it, err := b.NewMessageIterator(ctx, state, 10)
	if err != nil {
		t.Fatalf("NewMessageIterator: %v", err)
	}
	defer it.Close()
	var ids []string
	for {
		md, _, err := it.Next(ctx)
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if md.ID == "" {
			return ids
		}
		ids = append(ids, md.ID)
	}
}

// within polls cond every 5 ms until it holds or limit passes, and
// returns how long that took (waiting for another host's notification is
// what is measured; nothing else synchronises it).
func within(t testing.TB, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// waitListening waits until the Factory's change listener hears its
// probes: only then are views kept.
func waitListening(t testing.TB, a *tenant.Admin) {
	t.Helper()
	within(t, 10*time.Second, "the change listener hears its probes", func() bool { return a.PoolStats().Listening })
}

// TestViewsFollowDropAndProvision (M1): a pinned queue's cached states and
// counts are dropped by Drop and by Provision, on this host at once, and
// a missing tenant's metadata is "not found" without the server's text.
func TestViewsFollowDropAndProvision(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		bg := context.Background()
		admin := newAdmin(t, rb.factory)
		q := newMeta(t, rb.factory.ForTenant("dc2"))
		waitListening(t, admin)
		for i := range 3 {
			conformance.MustStoreMeta(t, q, bg, fmt.Sprintf("d%d", i), conformance.Meta(i, metastorage.StateIncoming))
		}
		if got := stateIDs(t, q, bg, metastorage.StateIncoming); len(got) != 3 {
			t.Fatalf("before Drop the queue lists %v", got)
		}
		stateIDs(t, q, bg, metastorage.StateIncoming) // served from the view now
		if n := q.GetStateCount(metastorage.StateIncoming); n != 3 {
			t.Fatalf("count before Drop = %d", n)
		}
		if st := admin.PoolStats(); st.ViewBytes == 0 {
			t.Fatalf("the queue's states are not kept in memory: %+v", st)
		}
		if err := admin.Drop(bg, "dc2"); err != nil {
			t.Fatal(err)
		}
		if got := stateIDs(t, q, bg, metastorage.StateIncoming); len(got) != 0 {
			t.Fatalf("after Drop the queue still lists %v", got)
		}
		if n := q.GetStateCount(metastorage.StateIncoming); n != 0 {
			t.Fatalf("after Drop the queue still counts %d", n)
		}
		_, err := q.GetMeta(bg, "d0")
		if !errors.Is(err, metastorage.ErrMessageNotFound) {
			t.Fatalf("GetMeta after Drop = %v", err)
		}
		for _, leak := range []string{"relation", "does not exist", "SQLSTATE", "t_dc2", "retryspool_data"} {
			if strings.Contains(err.Error(), leak) {
				t.Errorf("GetMeta's error shows server text %q: %v", leak, err)
			}
		}
		if err := admin.Provision(bg, "dc2"); err != nil {
			t.Fatal(err)
		}
		stateIDs(t, q, bg, metastorage.StateIncoming) // cache the empty state
		conformance.MustStoreMeta(t, q, bg, "fresh", conformance.Meta(7, metastorage.StateIncoming))
		if got := stateIDs(t, q, bg, metastorage.StateIncoming); !slices.Equal(got, []string{"fresh"}) {
			t.Fatalf("after Provision the queue lists %v, want only the new message", got)
		}
	})
}

// TestViewsFollowOtherHosts (M1): a Purge, a Drop and a write on host B
// reach host A's cached views within the cross-host bound (1 s).
func TestViewsFollowOtherHosts(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		bg := context.Background()
		adminA := newAdmin(t, rb.factory)
		hostB := tenant.NewFactory(rb.dsn).WithIsolation(mode).WithConnectionLimits(2, 0)
		adminB := newAdmin(t, hostB)
		qa := newMeta(t, rb.factory.ForTenant("dc3"))
		waitListening(t, adminA)
		for i := range 9 {
			conformance.MustStoreMeta(t, qa, bg, fmt.Sprintf("p%d", i), conformance.Meta(i, metastorage.StateDeferred))
		}
		if got := stateIDs(t, qa, bg, metastorage.StateDeferred); len(got) != 9 || qa.GetStateCount(metastorage.StateDeferred) != 9 {
			t.Fatalf("host A lists %v", got)
		}
		stateIDs(t, qa, bg, metastorage.StateDeferred)
		if st := adminA.PoolStats(); st.ViewBytes == 0 {
			t.Fatalf("host A keeps no view: %+v", st)
		}
		if _, err := adminB.Purge(bg, "dc3", 0); err != nil {
			t.Fatal(err)
		}
		purged := within(t, time.Second, "host B's Purge seen on host A", func() bool {
			return len(stateIDs(t, qa, bg, metastorage.StateDeferred)) == 0 && qa.GetStateCount(metastorage.StateDeferred) == 0
		})
		conformance.MustStoreMeta(t, qa, bg, "again", conformance.Meta(1, metastorage.StateDeferred))
		stateIDs(t, qa, bg, metastorage.StateDeferred)
		if st := adminA.PoolStats(); st.ViewBytes == 0 {
			t.Fatalf("host A keeps no view: %+v", st)
		}
		if err := adminB.Drop(bg, "dc3"); err != nil {
			t.Fatal(err)
		}
		dropped := within(t, time.Second, "host B's Drop seen on host A", func() bool {
			return len(stateIDs(t, qa, bg, metastorage.StateDeferred)) == 0 && qa.GetStateCount(metastorage.StateDeferred) == 0
		})
		t.Logf("host B's Purge seen on host A after %v, its Drop after %v", purged.Round(time.Millisecond), dropped.Round(time.Millisecond))
	})
}

// TestMetadataKeptByteForByte (M2): handler error text, policy names,
// metadata ids and headers with invalid UTF-8 and NUL are stored and read
// back exactly, by GetMeta and by iterators (from the database and from
// the views), and never fail the write.
func TestMetadataKeptByteForByte(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		bg := context.Background()
		q := newMeta(t, rb.factory.ForTenant("bytes"))
		waitListening(t, newAdmin(t, rb.factory))
		md := conformance.Meta(1, metastorage.StateActive)
		conformance.MustStoreMeta(t, q, bg, "m", md)
		md.LastError = "dial: remote said \xc3\x28 bye\x00 and \xff\xfe"
		md.RetryPolicyName = "po\x00licy\xc0"
		md.ID = "meta\x00\xe2\x82"
		md.Headers = map[string]string{"last-server": "mx\x00\xc3\x28.example", "k\xff": "", "": "empty key"}
		md.State, md.Attempts = metastorage.StateDeferred, 1
		if err := q.UpdateMeta(bg, "m", md); err != nil {
			t.Fatalf("UpdateMeta with invalid UTF-8 and NUL: %v", err)
		}
		got, err := q.GetMeta(bg, "m")
		if err != nil {
			t.Fatal(err)
		}
		same := func(got metastorage.MessageMetadata) bool {
			return got.LastError == md.LastError && got.RetryPolicyName == md.RetryPolicyName && fmt.Sprint(got.Headers) == fmt.Sprint(md.Headers) &&
				got.State == metastorage.StateDeferred && got.Attempts == 1
		}
		if !same(got) || got.ID != md.ID {
			t.Fatalf("GetMeta = %#v, want %#v", got, md)
		}
		for range 2 { // from the database, then from the view
			it, err := q.NewMessageIterator(bg, metastorage.StateDeferred, 1)
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := it.Next(bg)
			it.Close()
			if err != nil || !same(got) {
				t.Fatalf("iterator = %#v, %v", got, err)
			}
		}
		// An empty and a nil header map stay what they were.
		md.Headers = map[string]string{}
		conformance.MustStoreMeta(t, q, bg, "empty", md)
		md.Headers = nil
		conformance.MustStoreMeta(t, q, bg, "nil", md)
		if e, _ := q.GetMeta(bg, "empty"); e.Headers == nil || len(e.Headers) != 0 {
			t.Errorf("empty headers came back as %#v", e.Headers)
		}
		if n, _ := q.GetMeta(bg, "nil"); n.Headers != nil {
			t.Errorf("nil headers came back as %#v", n.Headers)
		}
	})
}

// TestQueueRetriesAHandlerErrorWithInvalidUTF8 (M2) plays RetrySpool's own
// sequence for a message whose handler fails with error text that is not
// UTF-8 and holds a NUL: enqueue, the scheduler's move to active, the
// worker's reads, the failure recorded with UpdateMeta (deferred, attempt
// 1, the handler's headers merged), then the retry: the scheduler finds it
// due, moves it to active, and the second attempt delivers it.
func TestQueueRetriesAHandlerErrorWithInvalidUTF8(t *testing.T) {
	t.Parallel()
	rb := setupRouter(t, schema.SchemaPerTenant)
	bg := context.Background()
	pinned := rb.factory.ForTenant("retrying")
	data := newRouter(t, pinned)
	meta := newMeta(t, pinned)
	conformance.MustStore(t, data, bg, "msg", []byte("body"))
	md := metastorage.MessageMetadata{ID: "msg", State: metastorage.StateIncoming, MaxAttempts: 5, Created: time.Now(),
		Headers: map[string]string{"to": "a@example.com"}}
	conformance.MustStoreMeta(t, meta, bg, "msg", md)
	attempt := func(fail error) {
		t.Helper()
		ids := stateIDs(t, meta, bg, metastorage.StateIncoming)
		from := metastorage.StateIncoming
		if len(ids) == 0 {
			from = metastorage.StateDeferred
			ids = stateIDs(t, meta, bg, metastorage.StateDeferred)
		}
		if !slices.Equal(ids, []string{"msg"}) {
			t.Fatalf("the scheduler finds %v", ids)
		}
		if err := meta.MoveToState(bg, "msg", from, metastorage.StateActive); err != nil {
			t.Fatal(err)
		}
		cur, err := meta.GetMeta(bg, "msg")
		if err != nil {
			t.Fatal(err)
		}
		conformance.MustRead(t, data, bg, "msg", []byte("body"))
		if fail == nil {
			if err := data.DeleteData(bg, "msg"); err != nil {
				t.Fatal(err)
			}
			if err := meta.DeleteMeta(bg, "msg"); err != nil {
				t.Fatal(err)
			}
			return
		}
		cur.Headers["last-server"] = "mx\x00.example"
		cur.LastError = fail.Error()
		cur.Attempts++
		cur.State = metastorage.StateDeferred
		cur.NextRetry = time.Now()
		if err := meta.UpdateMeta(bg, "msg", cur); err != nil {
			t.Fatalf("recording the failed attempt: %v", err)
		}
	}
	handlerErr := errors.New("dial: remote said \xc3\x28 bye\x00")
	attempt(handlerErr)
	got, err := meta.GetMeta(bg, "msg")
	if err != nil || got.State != metastorage.StateDeferred || got.Attempts != 1 || got.LastError != handlerErr.Error() ||
		got.Headers["last-server"] != "mx\x00.example" {
		t.Fatalf("after the failed attempt: %#v, %v; want deferred, attempt 1, the error and header byte for byte", got, err)
	}
	attempt(nil)
	if _, err := meta.GetMeta(bg, "msg"); !errors.Is(err, metastorage.ErrMessageNotFound) {
		t.Fatalf("the delivered message is still there: %v", err)
	}
	if _, err := data.GetDataReader(bg, "msg"); !errors.Is(err, datastorage.ErrDataNotFound) {
		t.Fatalf("the delivered body is still there: %v", err)
	}
}

// TestMetadataIntegersExactOrRefused (M3): states RetrySpool does not have
// are refused before any SQL (they would wrap onto another state), and
// integers are stored exactly.
func TestMetadataIntegersExactOrRefused(t *testing.T) {
	t.Parallel()
	rb := setupRouter(t, schema.SharedTable)
	bg := context.Background()
	q := newMeta(t, rb.factory.ForTenant("ints"))
	for _, state := range []metastorage.QueueState{65538, 99, -1, 6} {
		md := conformance.Meta(1, state)
		err := q.StoreMeta(bg, "bad", md)
		if !errors.Is(err, tenant.ErrInvalidMetadata) || !errors.Is(err, metastorage.ErrInvalidState) {
			t.Errorf("StoreMeta with state %d = %v, want ErrInvalidMetadata", state, err)
		}
	}
	if _, err := q.GetMeta(bg, "bad"); !errors.Is(err, metastorage.ErrMessageNotFound) {
		t.Fatalf("a refused StoreMeta stored something: %v", err)
	}
	md := conformance.Meta(1, metastorage.StateIncoming)
	md.Attempts, md.MaxAttempts, md.Priority = math.MaxInt32+2, 1<<32+5, -1<<40
	conformance.MustStoreMeta(t, q, bg, "big", md)
	got, err := q.GetMeta(bg, "big")
	if err != nil || got.Attempts != md.Attempts || got.MaxAttempts != md.MaxAttempts || got.Priority != md.Priority {
		t.Fatalf("stored attempts %d, max %d, priority %d; got %d, %d, %d (%v)", md.Attempts, md.MaxAttempts, md.Priority,
			got.Attempts, got.MaxAttempts, got.Priority, err)
	}
	for _, to := range []metastorage.QueueState{40000, 6} {
		if err := q.MoveToState(bg, "big", metastorage.StateIncoming, to); !errors.Is(err, metastorage.ErrInvalidState) {
			t.Errorf("MoveToState to %d = %v, want ErrInvalidState", to, err)
		}
	}
	if got, _ := q.GetMeta(bg, "big"); got.State != metastorage.StateIncoming {
		t.Fatalf("a refused move changed the state to %d", got.State)
	}
}

// TestMetadataSizeBounded (M4): one message's metadata is bounded
// (WithMaxMetadataSize, default 1 MiB) with ErrTooLarge before any SQL;
// quotas count bodies only.
func TestMetadataSizeBounded(t *testing.T) {
	t.Parallel()
	rb := setupRouter(t, schema.SchemaPerTenant)
	bg := context.Background()
	q := newMeta(t, rb.factory.WithQuota(1<<20, 20).ForTenant("big-meta"))
	md := conformance.Meta(1, metastorage.StateIncoming)
	md.LastError = strings.Repeat("e", 512<<10)
	md.Headers = map[string]string{"h": strings.Repeat("h", 512<<10)}
	if err := q.StoreMeta(bg, "huge", md); !errors.Is(err, tenant.ErrTooLarge) {
		t.Fatalf("StoreMeta of 1 MiB of metadata = %v, want ErrTooLarge", err)
	}
	if _, err := q.GetMeta(bg, "huge"); !errors.Is(err, metastorage.ErrMessageNotFound) {
		t.Fatalf("refused metadata was stored: %v", err)
	}
	small := newMeta(t, rb.factory.WithMaxMetadataSize(1<<10).ForTenant("small-meta"))
	md = conformance.Meta(1, metastorage.StateIncoming)
	conformance.MustStoreMeta(t, small, bg, "ok", md)
	md.LastError = strings.Repeat("x", 2<<10)
	if err := small.UpdateMeta(bg, "ok", md); !errors.Is(err, tenant.ErrTooLarge) {
		t.Fatalf("UpdateMeta over WithMaxMetadataSize = %v, want ErrTooLarge", err)
	}
	if got, _ := small.GetMeta(bg, "ok"); got.LastError != "error 1" {
		t.Fatalf("a refused UpdateMeta changed the metadata: %q", got.LastError)
	}
}

// TestIteratorMemoryFollowsBatch (M5): iterating over a state of large
// messages one at a time holds about one message, and nothing stays after
// Close. It runs alone (not parallel): it reads the process's heap.
func TestIteratorMemoryFollowsBatch(t *testing.T) {
	rb := setupRouter(t, schema.SharedTable)
	bg := context.Background()
	q := newMeta(t, rb.factory.ForTenant("heavy"))
	waitListening(t, newAdmin(t, rb.factory)) // views are kept: the bound must hold for them too
	const n, size = 200, 1 << 19              // 100 MiB of error text in all
	md := conformance.Meta(1, metastorage.StateDeferred)
	md.LastError = strings.Repeat("e", size)
	for i := range n {
		conformance.MustStoreMeta(t, q, bg, fmt.Sprintf("h%03d", i), md)
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	base := heap()
	var peak uint64
	it, err := q.NewMessageIterator(bg, metastorage.StateDeferred, 1)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for {
		got, _, err := it.Next(bg)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID == "" {
			break
		}
		seen++
		if seen%20 == 0 {
			peak = max(peak, heap())
		}
	}
	it.Close()
	after := heap()
	growth := func(v uint64) float64 { return float64(int64(v)-int64(base)) / (1 << 20) }
	t.Logf("%d messages of %d KiB, batch 1: heap grew by at most %.1f MiB while iterating, %.1f MiB after Close",
		seen, size>>10, growth(peak), growth(after))
	if seen != n {
		t.Fatalf("iterated %d of %d", seen, n)
	}
	if growth(peak) > 16 || growth(after) > 4 {
		t.Fatalf("iterating %d messages of %d KiB one at a time grew the heap by %.1f MiB (after Close %.1f MiB)",
			n, size>>10, growth(peak), growth(after))
	}
}

// TestListenerReconnectsFast (M6): a listening connection killed again
// and again comes back quickly each time; the backoff does not grow after
// connections that worked.
func TestListenerReconnectsFast(t *testing.T) {
	t.Parallel()
	rb := setupRouter(t, schema.SharedTable)
	admin := newAdmin(t, rb.factory)
	newMeta(t, rb.factory) // starts the listener
	waitListening(t, admin)
	bg := context.Background()
	var gaps []time.Duration
	for range 6 {
		sessions := admin.PoolStats().ListenSessions
		var killed int
		if err := rb.pool.QueryRow(bg, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE application_name = 'pgtenant-listener' AND datname = current_database()) k`).Scan(&killed); err != nil || killed != 1 {
			t.Fatalf("killed %d listeners: %v", killed, err)
		}
		gaps = append(gaps, within(t, 10*time.Second, "the listener back", func() bool {
			st := admin.PoolStats()
			return st.ListenSessions > sessions && st.Listening
		}))
	}
	t.Logf("listening again after %v", gaps)
	for i, g := range gaps {
		if g > 500*time.Millisecond {
			t.Errorf("kill %d: listening again after %v, want within 500 ms", i+1, g)
		}
	}
}

// TestMetadataListSortOrder (M7): "DESC" sorts descending like "desc".
func TestMetadataListSortOrder(t *testing.T) {
	t.Parallel()
	rb := setupRouter(t, schema.SharedTable)
	bg := context.Background()
	q := newMeta(t, rb.factory.ForTenant("sorted"))
	for i := range 3 {
		conformance.MustStoreMeta(t, q, bg, fmt.Sprintf("s%d", i), conformance.Meta(i, metastorage.StateIncoming))
	}
	for _, order := range []string{"desc", "DESC", "Desc"} {
		res, err := q.ListMessages(bg, metastorage.StateIncoming, metastorage.MessageListOptions{SortBy: "created", SortOrder: order})
		if err != nil || !slices.Equal(res.MessageIDs, []string{"s2", "s1", "s0"}) {
			t.Errorf("SortOrder %q: %v, %v", order, res.MessageIDs, err)
		}
	}
}

// TestViewsThroughPgBouncer (M9): behind PgBouncer in transaction pooling
// a host hears no notifications. Without WithListenDSN it notices (its
// probes never arrive), keeps no view, and sees another host's change at
// once; with WithListenDSN pointing past the pooler it keeps views and
// sees the change within the bound.
func TestViewsThroughPgBouncer(t *testing.T) {
	t.Parallel()
	b := pgtest.PgBouncer(t, 2)
	bg := context.Background()
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("listen-direct=%v", direct), func(t *testing.T) {
			t.Parallel()
			f, dsn := bouncedFactory(t, b, schema.SharedTable)
			if direct {
				f = f.WithListenDSN(dsn)
			}
			admin := newAdmin(t, f)
			qa := newMeta(t, f.ForTenant("bounced"))
			other := newMeta(t, tenant.NewFactory(dsn).WithIsolation(schema.SharedTable).WithConnectionLimits(2, 0).ForTenant("bounced"))
			conformance.MustStoreMeta(t, qa, bg, "first", conformance.Meta(1, metastorage.StateIncoming))
			if direct {
				waitListening(t, admin)
			} else {
				// The probes of a connection through the pooler never
				// come back: after three it says so, and waits.
				within(t, 10*time.Second, "the listener finds it hears nothing", func() bool { return admin.PoolStats().ListenerDeaf })
				if admin.PoolStats().Listening {
					t.Fatal("a listener behind PgBouncer claims to hear its probes")
				}
			}
			stateIDs(t, qa, bg, metastorage.StateIncoming)
			stateIDs(t, qa, bg, metastorage.StateIncoming)
			conformance.MustStoreMeta(t, other, bg, "second", conformance.Meta(2, metastorage.StateIncoming))
			seen := within(t, time.Second, "the other host's message", func() bool {
				return len(stateIDs(t, qa, bg, metastorage.StateIncoming)) == 2
			})
			st := admin.PoolStats()
			t.Logf("listening %v, views of %d tenants; the other host's message seen after %v", st.Listening, st.ViewTenants, seen.Round(time.Millisecond))
			if !direct && st.ViewTenants != 0 {
				t.Errorf("a host that hears no notifications keeps views of %d tenants", st.ViewTenants)
			}
		})
	}
}

package changes

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metastorage "schneider.vip/retryspool/storage/meta"
)

// newTestHub is a Hub whose views are trusted, with no database: the
// views' rules need none.
func newTestHub(tenants int, bytes int64) *Hub {
	h := New(Config{Store: "s", Tenants: tenants, Bytes: bytes})
	h.views.trusted.Store(true)
	return h
}

func metas(n, lastError int) []metastorage.MessageMetadata {
	out := make([]metastorage.MessageMetadata, n)
	for i := range out {
		out[i] = metastorage.MessageMetadata{ID: fmt.Sprintf("m%d", i), LastError: strings.Repeat("e", lastError)}
	}
	return out
}

// fill gathers list in pages of batch and ends the iteration.
func fill(t Ticket, state metastorage.QueueState, list []metastorage.MessageMetadata, batch int) {
	f := t.Fill(state)
	for len(list) > 0 {
		k := min(batch, len(list))
		f.Add(list[:k])
		list = list[k:]
	}
	f.Done()
}

func TestViewKeepsAStateUntilItChanges(t *testing.T) {
	h := newTestHub(0, 0)
	_, ok, tk := h.State("a", metastorage.StateIncoming)
	if ok {
		t.Fatal("an empty view has a state")
	}
	fill(tk, metastorage.StateIncoming, metas(3, 10), 2)
	list, ok, _ := h.State("a", metastorage.StateIncoming)
	if !ok || len(list) != 3 {
		t.Fatalf("kept %d messages (%v), want 3", len(list), ok)
	}
	h.views.changed("a")
	if _, ok, _ := h.State("a", metastorage.StateIncoming); ok {
		t.Fatal("a changed tenant's view still has its state")
	}
	if h.ViewStats().Bytes != 0 {
		t.Fatalf("an empty view holds %d bytes", h.ViewStats().Bytes)
	}
}

func TestViewDiscardsALoadThatAChangeOvertook(t *testing.T) {
	h := newTestHub(0, 0)
	_, _, tk := h.State("a", metastorage.StateDeferred)
	h.views.changed("a") // a change while the load ran
	fill(tk, metastorage.StateDeferred, metas(2, 0), 10)
	if _, ok, _ := h.State("a", metastorage.StateDeferred); ok {
		t.Fatal("a load older than a change was kept")
	}
	_, _, tk = h.Count("a", metastorage.StateDeferred)
	h.views.changed("a")
	tk.KeepCounts(map[metastorage.QueueState]int64{metastorage.StateDeferred: 2})
	if _, ok, _ := h.Count("a", metastorage.StateDeferred); ok {
		t.Fatal("counts older than a change were kept")
	}
}

func TestViewBounds(t *testing.T) {
	t.Run("messages", func(t *testing.T) {
		h := newTestHub(0, 0)
		_, _, tk := h.State("a", metastorage.StateIncoming)
		fill(tk, metastorage.StateIncoming, metas(MaxStateMessages+1, 0), 100)
		if _, ok, _ := h.State("a", metastorage.StateIncoming); ok {
			t.Fatalf("a state of %d messages was kept", MaxStateMessages+1)
		}
	})
	t.Run("tenant bytes", func(t *testing.T) {
		h := newTestHub(0, 0)
		_, _, tk := h.State("a", metastorage.StateIncoming)
		fill(tk, metastorage.StateIncoming, metas(3, TenantBytes/2), 1)
		if _, ok, _ := h.State("a", metastorage.StateIncoming); ok {
			t.Fatal("a state over TenantBytes was kept")
		}
		// Two states that fit alone but not together.
		_, _, tk = h.State("a", metastorage.StateIncoming)
		fill(tk, metastorage.StateIncoming, metas(1, TenantBytes*2/3), 1)
		_, _, tk = h.State("a", metastorage.StateDeferred)
		fill(tk, metastorage.StateDeferred, metas(1, TenantBytes*2/3), 1)
		_, inc, _ := h.State("a", metastorage.StateIncoming)
		_, def, _ := h.State("a", metastorage.StateDeferred)
		if !inc || def {
			t.Fatalf("kept incoming %v, deferred %v; want only the first within TenantBytes", inc, def)
		}
		if got := h.ViewStats().Bytes; got > TenantBytes {
			t.Fatalf("the view holds %d bytes, over %d", got, TenantBytes)
		}
	})
	t.Run("all views' bytes", func(t *testing.T) {
		const budget = 4 * TenantBytes
		h := newTestHub(0, budget)
		for i := range 20 {
			id := fmt.Sprintf("t%d", i)
			_, _, tk := h.State(id, metastorage.StateIncoming)
			fill(tk, metastorage.StateIncoming, metas(1, TenantBytes/2), 1)
			if got := h.ViewStats().Bytes; got > budget {
				t.Fatalf("after %d tenants the views hold %d bytes, over %d", i+1, got, budget)
			}
		}
		// The most recent tenant is kept, the oldest went.
		if _, ok, _ := h.State("t19", metastorage.StateIncoming); !ok {
			t.Error("the most recent tenant's view went")
		}
		if _, ok, _ := h.State("t0", metastorage.StateIncoming); ok {
			t.Error("the least recently used tenant's view stayed")
		}
	})
	t.Run("tenants", func(t *testing.T) {
		h := newTestHub(5, 0)
		for i := range 50 {
			_, _, tk := h.State(fmt.Sprintf("t%d", i), metastorage.StateIncoming)
			fill(tk, metastorage.StateIncoming, metas(1, 0), 1)
		}
		if st := h.ViewStats(); st.Tenants != 5 || st.Bytes != 5*Size(metas(1, 0)[0]) {
			t.Fatalf("views of %d tenants, %d bytes; want 5 and the bytes of 5 messages", st.Tenants, st.Bytes)
		}
	})
}

func TestViewExpires(t *testing.T) {
	h := newTestHub(0, 0)
	_, _, tk := h.State("a", metastorage.StateIncoming)
	fill(tk, metastorage.StateIncoming, metas(1, 0), 1)
	v := h.views.get("a", false)
	v.mu.Lock()
	v.filled = time.Now().Add(-MaxAge - time.Second)
	v.mu.Unlock()
	if _, ok, _ := h.State("a", metastorage.StateIncoming); ok {
		t.Fatal("a view older than MaxAge was used")
	}
}

func TestUntrustedViewsKeepNothing(t *testing.T) {
	h := New(Config{Store: "s"})
	if _, ok, tk := h.State("a", metastorage.StateIncoming); ok || tk.v != nil {
		t.Fatal("untrusted views handed out a state or a ticket")
	}
	h.trust()
	_, _, tk := h.State("a", metastorage.StateIncoming)
	h.distrust() // the listener lost its connection while the load ran
	h.trust()
	fill(tk, metastorage.StateIncoming, metas(1, 0), 1)
	if _, ok, _ := h.State("a", metastorage.StateIncoming); ok {
		t.Fatal("a load from before a loss of trust was kept")
	}
}

func TestNextRetry(t *testing.T) {
	// Kills of a working connection, one after another: each retry is
	// fast, the backoff never grows.
	b := firstRetry
	for range 8 {
		var wait time.Duration
		wait, b = nextRetry(worked, b)
		if wait != firstRetry {
			t.Fatalf("retry after a working connection waits %v, want %v", wait, firstRetry)
		}
	}
	// Failures in a row double up to maxRetry.
	b = firstRetry
	var waits []time.Duration
	for range 10 {
		var wait time.Duration
		wait, b = nextRetry(failed, b)
		waits = append(waits, wait)
	}
	if waits[0] != firstRetry || waits[1] != 2*firstRetry || waits[9] != maxRetry {
		t.Fatalf("failure waits %v", waits)
	}
	// After a success the next failure starts small again.
	_, b = nextRetry(worked, maxRetry)
	if wait, _ := nextRetry(failed, b); wait > 2*firstRetry {
		t.Fatalf("first failure after a working connection waits %v", wait)
	}
	if wait, _ := nextRetry(deaf, firstRetry); wait != deafRetry {
		t.Fatalf("a deaf connection is retried after %v, want %v", wait, deafRetry)
	}
}

// TestDistrustsCountsDrops: the views are counted as dropped once each
// time they stop being trusted, not for every late probe meanwhile.
func TestDistrustsCountsDrops(t *testing.T) {
	h := newTestHub(0, 0)
	h.distrust()
	h.distrust() // still untrusted: not a second drop
	if got := h.Distrusts(); got != 1 {
		t.Fatalf("Distrusts = %d after one drop, want 1", got)
	}
	h.trust()
	h.distrust()
	if got, trusted := h.Distrusts(), h.Trusted(); got != 2 || trusted {
		t.Fatalf("Distrusts = %d (trusted %v) after trust and a second drop, want 2 (false)", got, trusted)
	}
}

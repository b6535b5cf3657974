package changes

import (
	"maps"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	metastorage "schneider.vip/retryspool/storage/meta"
)

// Bounds of the views.
const (
	// MaxStateMessages is the most messages of one queue state a view
	// keeps; a larger state is read from the database on every scan.
	MaxStateMessages = 1000
	// TenantBytes is the most bytes one tenant's view keeps (by Size); a
	// state that would take it over is read from the database.
	TenantBytes = 2 << 20
	// DefaultBytes is the default bound of all views of a Hub: when they
	// would hold more, the least recently used tenants' views go.
	DefaultBytes = 64 << 20
	// DefaultTenants is the default number of tenants with a view.
	DefaultTenants = 10_000
	// MaxAge is how long a view is kept at most after it was first filled.
	// Changes normally arrive within milliseconds; an announcement lost
	// (its host crashed after the change and before announcing it) delays
	// them by at most this.
	MaxAge = time.Minute
)

// countBytes is what a view's counts are charged.
const countBytes = 256

// Size estimates the memory one message's metadata takes in a view.
func Size(md metastorage.MessageMetadata) int64 {
	n := 192 + len(md.ID) + len(md.LastError) + len(md.RetryPolicyName)
	for k, v := range md.Headers {
		n += 48 + len(k) + len(v)
	}
	return int64(n)
}

// views keeps, per tenant, the queue states and counts that metadata scans
// read. golang-lru's expirable LRU would bound their age too, but in v2 its
// clean-up goroutine can never be stopped (one leaked per Hub); so the
// LRU here bounds the number of tenants, bytes are counted beside it, and
// age is checked when a view is read.
type views struct {
	cache   *lru.Cache[string, *view]
	limit   int64
	bytes   atomic.Int64
	trusted atomic.Bool
}

// view is one tenant's cached states and counts, tagged with the version
// they were loaded at: a change bumps the version and empties the view, so
// a load that began before a change is never kept.
type view struct {
	vs      *views
	mu      sync.Mutex
	version uint64
	gone    bool // evicted: nothing is kept any more
	states  map[metastorage.QueueState][]metastorage.MessageMetadata
	sizes   map[metastorage.QueueState]int64
	counts  map[metastorage.QueueState]int64 // nil: not counted since the last change
	bytes   int64
	filled  time.Time // when first filled since the last change
}

func newViews(tenants int, bytes int64) *views {
	if tenants <= 0 {
		tenants = DefaultTenants
	}
	if bytes <= 0 {
		bytes = DefaultBytes
	}
	vs := &views{limit: bytes}
	// The callback runs outside the LRU's lock (golang-lru's contract).
	vs.cache, _ = lru.NewWithEvict(tenants, func(_ string, v *view) { v.evicted() })
	return vs
}

// get returns tenant id's view, making it if create is true.
func (vs *views) get(id string, create bool) *view {
	if v, ok := vs.cache.Get(id); ok {
		return v
	}
	if !create {
		return nil
	}
	v := &view{vs: vs, states: map[metastorage.QueueState][]metastorage.MessageMetadata{},
		sizes: map[metastorage.QueueState]int64{}}
	if prev, ok, _ := vs.cache.PeekOrAdd(id, v); ok {
		return prev
	}
	return v
}

// changed empties tenant id's view.
func (vs *views) changed(id string) {
	if v := vs.get(id, false); v != nil {
		v.changed()
	}
}

// changedAll empties every view (the listener lost or regained its
// connection, so changes may have been missed).
func (vs *views) changedAll() {
	for _, id := range vs.cache.Keys() {
		vs.changed(id)
	}
}

// shrink evicts the least recently used views until the bytes held are
// within the limit.
func (vs *views) shrink() {
	for vs.bytes.Load() > vs.limit {
		if _, _, ok := vs.cache.RemoveOldest(); !ok {
			return
		}
	}
}

func (v *view) changed() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.emptyLocked()
}

// emptyLocked drops the view's contents and bumps its version. v.mu is
// held.
func (v *view) emptyLocked() {
	v.version++
	v.filled = time.Time{}
	clear(v.states)
	clear(v.sizes)
	v.counts = nil
	v.vs.bytes.Add(-v.bytes)
	v.bytes = 0
}

func (v *view) evicted() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.gone = true
	v.emptyLocked()
}

// expireLocked empties the view once it is older than MaxAge. v.mu is
// held.
func (v *view) expireLocked() {
	if !v.filled.IsZero() && time.Since(v.filled) > MaxAge {
		v.emptyLocked()
	}
}

// keep runs apply if the view is still at version, the views are trusted
// and the view stays within TenantBytes; size returns how many bytes apply
// adds (or, negative, frees). Both run under the view's lock.
func (v *view) keep(version uint64, size func() int64, apply func()) {
	v.mu.Lock()
	delta := size()
	ok := !v.gone && v.version == version && v.vs.trusted.Load() && v.bytes+delta <= TenantBytes
	if ok {
		apply()
		v.bytes += delta
		v.vs.bytes.Add(delta)
		if v.filled.IsZero() {
			v.filled = time.Now()
		}
	}
	v.mu.Unlock()
	if ok && delta > 0 {
		v.vs.shrink()
	}
}

// Ticket is what a view looked like when a load from the database began:
// what the load finds may be kept only if nothing changed since.
type Ticket struct {
	v       *view
	version uint64
}

// State returns tenant id's cached messages in state, if any, and a
// Ticket under which a load of the state may be kept (see Fill). While the
// views are not trusted nothing is cached, and nothing can be kept.
func (h *Hub) State(id string, state metastorage.QueueState) ([]metastorage.MessageMetadata, bool, Ticket) {
	if !h.views.trusted.Load() {
		return nil, false, Ticket{}
	}
	v := h.views.get(id, true)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.expireLocked()
	list, ok := v.states[state]
	return list, ok, Ticket{v: v, version: v.version}
}

// Count returns tenant id's cached count of state, if counted, and a
// Ticket under which counts may be kept (see KeepCounts).
func (h *Hub) Count(id string, state metastorage.QueueState) (int64, bool, Ticket) {
	if !h.views.trusted.Load() {
		return 0, false, Ticket{}
	}
	v := h.views.get(id, true)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.expireLocked()
	if v.counts == nil {
		return 0, false, Ticket{v: v, version: v.version}
	}
	return v.counts[state], true, Ticket{v: v, version: v.version}
}

// KeepCounts keeps counts taken under t, unless the view changed since.
func (t Ticket) KeepCounts(counts map[metastorage.QueueState]int64) {
	if t.v == nil {
		return
	}
	c := maps.Clone(counts)
	if c == nil {
		c = map[metastorage.QueueState]int64{}
	}
	t.v.keep(t.version, func() int64 {
		if t.v.counts != nil {
			return 0
		}
		return countBytes
	}, func() { t.v.counts = c })
}

// Fill gathers a state's messages page by page, as an iterator reads them,
// and keeps the whole state in the view when the iteration ends, if it
// stayed within the bounds (MaxStateMessages, TenantBytes) and nothing
// changed meanwhile. Its memory is what the view would keep, at most
// TenantBytes; the iterator's own follows its batch size.
type Fill struct {
	t     Ticket
	state metastorage.QueueState
	list  []metastorage.MessageMetadata
	bytes int64
	over  bool
}

// Fill starts gathering state under t.
func (t Ticket) Fill(state metastorage.QueueState) *Fill {
	return &Fill{t: t, state: state, over: t.v == nil}
}

// Add gathers one page.
func (f *Fill) Add(page []metastorage.MessageMetadata) {
	if f.over {
		return
	}
	for _, md := range page {
		f.bytes += Size(md)
	}
	f.list = append(f.list, page...)
	if len(f.list) > MaxStateMessages || f.bytes > TenantBytes {
		f.over, f.list = true, nil
	}
}

// Done keeps what was gathered: the iteration reached the state's end.
func (f *Fill) Done() {
	if f.over {
		return
	}
	f.over = true
	v, list, bytes := f.t.v, f.list, f.bytes
	f.list = nil
	if list == nil {
		list = []metastorage.MessageMetadata{}
	}
	v.keep(f.t.version, func() int64 { return bytes - v.sizes[f.state] }, func() {
		v.states[f.state] = list
		v.sizes[f.state] = bytes
	})
}

// ViewStats counts what the views hold.
type ViewStats struct {
	Tenants int
	Bytes   int64
	Trusted bool
}

// ViewStats returns what the views hold now.
func (h *Hub) ViewStats() ViewStats {
	return ViewStats{Tenants: h.views.cache.Len(), Bytes: h.views.bytes.Load(), Trusted: h.views.trusted.Load()}
}

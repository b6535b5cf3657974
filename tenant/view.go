package tenant

import (
	"maps"
	"sync"
	"sync/atomic"
	"time"

	metastorage "schneider.vip/retryspool/storage/meta"
)

// maxCached is the most messages of one queue state a view keeps in
// memory; a larger state is read from the database on every scan.
const maxCached = 1000

// maxViewAge is how long a view is kept at most. Other hosts' changes
// normally arrive through notifications within milliseconds; a
// notification lost (its host crashed after the write and before the
// notification, or the notification failed) delays them by at most this.
// At 1 000 idle tenants it costs about 3 000 statements per maxViewAge.
const maxViewAge = time.Minute

// viewSet keeps, per tenant, the small queue states that metadata scans
// read, so that a queue whose states did not change is scanned without a
// round trip. A view is valid until a write of the tenant on this host (at
// once) or on another host (through the listener's notification) changes
// it. While the listener is not connected no view is trusted.
type viewSet struct {
	mu      sync.Mutex
	tenants map[string]*tenantView
	// trusted is true while the listener is connected: only then can
	// other hosts' writes be learnt of.
	trusted atomic.Bool
}

// tenantView is one tenant's cached states and counts, tagged with the
// version they were loaded at.
type tenantView struct {
	mu      sync.Mutex
	version uint64
	states  map[metastorage.QueueState][]metastorage.MessageMetadata
	counts  map[metastorage.QueueState]int64 // nil: not counted since the last change
	filled  time.Time                        // when first filled since the last change
}

func newViewSet() *viewSet { return &viewSet{tenants: map[string]*tenantView{}} }

func (s *viewSet) view(id string) *tenantView {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.tenants[id]
	if v == nil {
		v = &tenantView{states: map[metastorage.QueueState][]metastorage.MessageMetadata{}}
		s.tenants[id] = v
	}
	return v
}

// changed drops tenant id's cached states and counts: its metadata
// changed.
func (s *viewSet) changed(id string) {
	s.mu.Lock()
	v := s.tenants[id]
	s.mu.Unlock()
	if v != nil {
		v.changed()
	}
}

// changedAll drops every tenant's cache (the listener lost or regained
// its connection, so changes may have been missed).
func (s *viewSet) changedAll() {
	s.mu.Lock()
	views := make([]*tenantView, 0, len(s.tenants))
	for _, v := range s.tenants {
		views = append(views, v)
	}
	s.mu.Unlock()
	for _, v := range views {
		v.changed()
	}
}

func (v *tenantView) changed() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.changedLocked()
}

// changedLocked drops the view's contents. v.mu is held.
func (v *tenantView) changedLocked() {
	v.filled = time.Time{}
	v.version++
	clear(v.states)
	v.counts = nil
}

// state returns the cached messages of state, if any, and the view's
// version, under which a load may be stored (see store).
func (v *tenantView) state(state metastorage.QueueState) ([]metastorage.MessageMetadata, bool, uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.expire()
	list, ok := v.states[state]
	return list, ok, v.version
}

// store keeps a state's messages loaded at version, unless the view
// changed since.
func (v *tenantView) store(state metastorage.QueueState, version uint64, list []metastorage.MessageMetadata) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.version == version {
		v.states[state] = list
		v.fill()
	}
}

// count returns the cached count of state, if counted.
func (v *tenantView) count(state metastorage.QueueState) (int64, bool, uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.expire()
	if v.counts == nil {
		return 0, false, v.version
	}
	return v.counts[state], true, v.version
}

// storeCounts keeps counts taken at version, unless the view changed
// since.
func (v *tenantView) storeCounts(version uint64, counts map[metastorage.QueueState]int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.version == version {
		v.counts = maps.Clone(counts)
		v.fill()
	}
}

// fill notes when the view was first filled since its last change. v.mu
// is held.
func (v *tenantView) fill() {
	if v.filled.IsZero() {
		v.filled = time.Now()
	}
}

// expire drops the view's contents once it is older than maxViewAge.
// v.mu is held.
func (v *tenantView) expire() {
	if !v.filled.IsZero() && time.Since(v.filled) > maxViewAge {
		v.changedLocked()
	}
}

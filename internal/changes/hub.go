package changes

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/internal/pg"
)

// Config is what a Hub is made of.
type Config struct {
	// Notify is where announcements and probes are sent (the pool).
	Notify pg.DB
	// Listen configures the listening connection. It must reach the
	// server directly: through a transaction pooler notifications do not
	// arrive, the probes find that out, and no view is trusted.
	Listen *pgx.ConnConfig
	// Store is the store's key: only its tenants' changes are heard.
	Store string
	// Tenants and Bytes bound the views (DefaultTenants, DefaultBytes
	// when not positive).
	Tenants int
	Bytes   int64
	// Log reports the listener's troubles and failed announcements; nil
	// logs nothing.
	Log *slog.Logger
}

// Hub announces this host's changes to every host and hears theirs, and
// keeps the views that depend on them. It is safe for concurrent use.
type Hub struct {
	cfg    Config
	prefix string
	token  string // this Hub's, in its announcements and probes
	log    *slog.Logger
	views  *views
	notify *notifier

	startOnce sync.Once
	cancel    context.CancelFunc
	done      sync.WaitGroup
	sessions  atomic.Int64 // listening connections opened
	deaf      atomic.Bool  // the last session never heard a probe
	distrusts atomic.Int64 // times the views stopped being trusted
}

// New returns a Hub; it listens once Start is called.
func New(cfg Config) *Hub {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var token [8]byte
	_, _ = rand.Read(token[:])
	h := &Hub{cfg: cfg, prefix: cfg.Store + "/", token: hex.EncodeToString(token[:]), log: log, views: newViews(cfg.Tenants, cfg.Bytes)}
	h.notify = newNotifier(cfg.Notify, h.prefix, h.token, func(err error) {
		log.Warn("pgtenant: a change announcement failed; other hosts see the change within "+MaxAge.String(), "err", err)
	})
	return h
}

// Changed says that what tenant id holds changed: this host's view of it
// is dropped at once, and the other hosts' when the announcement arrives
// (within NotifyWindow and a round trip).
func (h *Hub) Changed(id string) {
	h.views.changed(id)
	h.notify.changed(id)
}

// Start starts listening, once; later calls do nothing. Until the listener
// hears its first probe no view is trusted.
func (h *Hub) Start() {
	h.startOnce.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		h.cancel = cancel
		h.done.Go(func() { h.listen(ctx) })
	})
}

// Trusted reports whether the views are trusted now: the listener hears
// its probes.
func (h *Hub) Trusted() bool { return h.views.trusted.Load() }

// Deaf reports whether the last listening connection never heard one of
// its probes: notifications do not reach it (a transaction pooler in
// between, most likely), and no view is trusted until one does.
func (h *Hub) Deaf() bool { return h.deaf.Load() }

// Sessions returns how many listening connections were opened so far.
func (h *Hub) Sessions() int64 { return h.sessions.Load() }

// Close stops listening and sends what is pending; it waits for both.
// Later changes are not announced.
func (h *Hub) Close() {
	h.startOnce.Do(func() {}) // a Start after Close does nothing
	if h.cancel != nil {
		h.cancel()
	}
	h.done.Wait()
	h.notify.close()
	h.views.trusted.Store(false)
}

// trust and distrust switch the views' trust; both empty every view, since
// changes may have been missed while the listener did not hear them.
func (h *Hub) trust() {
	if !h.views.trusted.Load() {
		h.views.changedAll()
		h.views.trusted.Store(true)
		h.views.changedAll()
	}
}

func (h *Hub) distrust() {
	if h.views.trusted.CompareAndSwap(true, false) {
		h.distrusts.Add(1)
		h.views.changedAll()
	}
}

// Distrusts counts the times the views stopped being trusted while the
// Hub ran (a probe late, the listening connection lost): each time every
// view was emptied and scans read the database until a probe came back.
func (h *Hub) Distrusts() int64 { return h.distrusts.Load() }

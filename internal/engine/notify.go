package engine

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/pgtenant/pgtenant/internal/pg"
)

// Notifier tells other hosts which tenants' metadata changed, coalescing:
// the first change starts a window of NotifyWindow, the tenants that
// change within it go out together in one notification statement, and
// while that runs the next window gathers. PostgreSQL serialises
// the commits of notifying transactions (a database-wide lock from
// pre-commit to the end of the commit), so a notification inside every
// metadata write makes all writes queue for that lock; one notification per
// batch keeps it off the write path.
//
// A notification is sent after the write it announces returned, so after
// its commit: a host that hears it and reads again sees the write. A host
// that crashes between the two loses the notification; readers bound the
// staleness that causes with a maximum age of what they keep.
type Notifier struct {
	db      pg.DB
	channel string
	prefix  string
	onError func(error)

	mu      sync.Mutex
	pending map[string]struct{}
	running bool
	closed  bool
	stop    chan struct{} // closed by Close: send at once
	done    sync.WaitGroup
}

// NotifyWindow is how long changes are gathered into one notification.
// It delays what other hosts see by as much, and bounds the notification
// statements to one per window per Factory.
const NotifyWindow = 10 * time.Millisecond

// MaxPayload is the most bytes of one notification's payload (PostgreSQL
// refuses 8000 or more).
const MaxPayload = 7900

// notifyTimeout bounds one notification statement.
const notifyTimeout = 5 * time.Second

// NewNotifier returns a Notifier that sends, on db, notifications on
// channel whose payload is prefix followed by tenant ids, one per line.
// onError, if not nil, is told of notifications that failed.
func NewNotifier(db pg.DB, channel, prefix string, onError func(error)) *Notifier {
	return &Notifier{db: db, channel: channel, prefix: prefix, onError: onError, pending: map[string]struct{}{},
		stop: make(chan struct{})}
}

// Changed queues a notification that tenant id changed; it does not wait.
func (n *Notifier) Changed(id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	n.pending[id] = struct{}{}
	if !n.running {
		n.running = true
		n.done.Go(n.run)
	}
}

// run sends the pending notifications until none are left.
func (n *Notifier) run() {
	window := time.NewTimer(NotifyWindow)
	defer window.Stop()
	for {
		select {
		case <-window.C:
		case <-n.stop:
		}
		n.mu.Lock()
		if len(n.pending) == 0 {
			n.running = false
			n.mu.Unlock()
			return
		}
		ids := make([]string, 0, len(n.pending))
		for id := range n.pending {
			ids = append(ids, id)
		}
		clear(n.pending)
		n.mu.Unlock()
		for _, payload := range Payloads(n.prefix, ids) {
			ctx, cancel := context.WithTimeout(context.Background(), notifyTimeout)
			_, err := n.db.Exec(ctx, "SELECT pg_catalog.pg_notify($1::pg_catalog.text, $2::pg_catalog.text)", n.channel, payload)
			cancel()
			if err != nil && n.onError != nil {
				n.onError(err)
			}
		}
		window.Reset(NotifyWindow)
	}
}

// Close sends what is pending and stops; later changes are dropped.
func (n *Notifier) Close() {
	n.mu.Lock()
	if !n.closed {
		n.closed = true
		close(n.stop)
	}
	n.mu.Unlock()
	n.done.Wait()
}

// Payloads packs ids into payloads of at most MaxPayload bytes, each
// prefix followed by ids separated by newlines (a tenant id holds none).
func Payloads(prefix string, ids []string) []string {
	var (
		out []string
		b   strings.Builder
	)
	for _, id := range ids {
		if b.Len() > 0 && b.Len()+1+len(id) > MaxPayload {
			out = append(out, b.String())
			b.Reset()
		}
		if b.Len() == 0 {
			b.WriteString(prefix)
		} else {
			b.WriteByte('\n')
		}
		b.WriteString(id)
	}
	if b.Len() > 0 {
		out = append(out, b.String())
	}
	return out
}

// ParsePayload returns the tenant ids of a payload with prefix, and
// whether it had that prefix.
func ParsePayload(prefix, payload string) ([]string, bool) {
	rest, ok := strings.CutPrefix(payload, prefix)
	if !ok {
		return nil, false
	}
	return strings.Split(rest, "\n"), true
}

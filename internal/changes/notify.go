package changes

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/internal/stmt"
)

// notifySQL sends one notification; channel and payload are parameters.
const notifySQL = "SELECT pg_catalog.pg_notify($1::pg_catalog.text, $2::pg_catalog.text)"

// NotifyWindow is how long changes are gathered into one notification.
// It delays what other hosts see by as much, and bounds the notification
// statements to one per window per Hub.
const NotifyWindow = 10 * time.Millisecond

// notifyTimeout bounds one notification statement.
const notifyTimeout = 5 * time.Second

// notifier announces changed tenants, coalescing: the first change starts
// a window of NotifyWindow, the tenants that change within it go out
// together in one notification statement, and while that runs the next
// window gathers. PostgreSQL serialises the commits of notifying
// transactions (a database-wide lock from pre-commit to the end of the
// commit), so a notification inside every write would make all writes
// queue for that lock; one per batch keeps it off the write path.
//
// An announcement is sent after the change it announces returned, so after
// its commit: a host that hears it and reads again sees the change. A host
// that crashes between the two loses the announcement; views bound the
// staleness that causes with MaxAge.
type notifier struct {
	db      pg.DB
	prefix  string
	token   string
	onError func(error)

	mu      sync.Mutex
	pending map[string]struct{}
	running bool
	closed  bool
	stop    chan struct{} // closed by close: send at once
	done    sync.WaitGroup
}

func newNotifier(db pg.DB, prefix, token string, onError func(error)) *notifier {
	return &notifier{db: db, prefix: prefix, token: token, onError: onError, pending: map[string]struct{}{}, stop: make(chan struct{})}
}

// changed queues an announcement that tenant id changed; it does not wait.
func (n *notifier) changed(id string) {
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

// run sends the pending announcements until none are left.
func (n *notifier) run() {
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
		slices.Sort(ids)
		for _, payload := range Payloads(n.prefix, n.token, ids) {
			if err := send(n.db, payload); err != nil && n.onError != nil {
				n.onError(err)
			}
		}
		window.Reset(NotifyWindow)
	}
}

// send runs one notification statement, bounded by notifyTimeout.
func send(db pg.DB, payload string) error {
	ctx, cancel := context.WithTimeout(context.Background(), notifyTimeout)
	defer cancel()
	_, err := db.Exec(ctx, notifySQL, Channel, payload)
	return err
}

// close sends what is pending and stops; later changes are dropped.
func (n *notifier) close() {
	n.mu.Lock()
	if !n.closed {
		n.closed = true
		close(n.stop)
	}
	n.mu.Unlock()
	n.done.Wait()
}

// Statements returns the statements of a Hub, named (for the golden
// files).
func Statements() []stmt.Named {
	return []stmt.Named{{Name: "changes.notify", SQL: notifySQL, Params: []string{"channel", "payload"}},
		{Name: "changes.listen", SQL: "LISTEN " + Channel}}
}

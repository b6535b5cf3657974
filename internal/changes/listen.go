package changes

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Listener timing.
const (
	// ProbeEvery is how often the listener sends itself a probe through
	// the pool. A probe that has not come back when the next one is sent
	// makes the views untrusted until one does.
	ProbeEvery = time.Second
	// missedProbes in a row end a connection that worked (it is assumed
	// dead) and make the listener connect again.
	missedProbes = 3
	// firstRetry is the wait before connecting again after a connection
	// that worked; each failure in a row doubles it, up to maxRetry.
	firstRetry = 50 * time.Millisecond
	maxRetry   = 5 * time.Second
	// deafRetry is the wait after a connection on which no probe ever
	// arrived: notifications do not reach it (a transaction pooler).
	deafRetry = time.Minute
	// closeTimeout bounds closing the listening connection.
	closeTimeout = 5 * time.Second
)

// outcome is how a listening session ended.
type outcome int

const (
	failed outcome = iota // could not connect or LISTEN
	worked                // heard its probes, then lost the connection
	deaf                  // connected, but no probe ever arrived
)

// nextRetry returns the wait before the next session after one that ended
// with o, and the backoff to carry on with.
func nextRetry(o outcome, backoff time.Duration) (wait, next time.Duration) {
	switch o {
	case worked:
		return firstRetry, 2 * firstRetry
	case deaf:
		return deafRetry, firstRetry
	}
	return backoff, min(2*backoff, maxRetry)
}

// listen runs listening sessions until ctx ends.
func (h *Hub) listen(ctx context.Context) {
	backoff := firstRetry
	warnedDeaf := false
	for {
		o, err := h.session(ctx)
		h.distrust()
		if ctx.Err() != nil {
			return
		}
		switch o {
		case worked:
			h.log.WarnContext(ctx, "pgtenant: the change listener lost its connection; metadata scans read the database until it is back", "err", err)
		case deaf:
			h.deaf.Store(true)
			if !warnedDeaf {
				warnedDeaf = true
				h.log.WarnContext(ctx, "pgtenant: change notifications do not arrive on the listening connection "+
					"(is a transaction pooler such as PgBouncer in between? give the Factory a direct connection with WithListenDSN); "+
					"metadata scans read the database every time")
			}
		default:
			h.log.WarnContext(ctx, "pgtenant: the change listener cannot connect; metadata scans read the database until it can", "err", err)
		}
		var wait time.Duration
		wait, backoff = nextRetry(o, backoff)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// session connects, LISTENs and hears notifications until the connection
// fails or its probes stop arriving. A probe that arrives makes the views
// trusted.
func (h *Hub) session(ctx context.Context) (outcome, error) {
	conn, err := pgx.ConnectConfig(ctx, h.cfg.Listen)
	if err != nil {
		return failed, err
	}
	h.sessions.Add(1)
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return failed, err
	}
	probe := probePrefix + h.token + " "

	sctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var (
		sent, heard atomic.Int64
		ever        atomic.Bool
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.probe(sctx, stop, probe, &sent, &heard, &ever)
	}()
	defer func() { stop(nil); <-done }()

	for {
		n, err := conn.WaitForNotification(sctx)
		if err != nil {
			if cause := context.Cause(sctx); ctx.Err() == nil && cause != nil {
				err = cause
			}
			switch {
			case ever.Load():
				return worked, err
			case errors.Is(err, errDeaf):
				return deaf, err
			}
			return failed, err
		}
		if seq, ok := strings.CutPrefix(n.Payload, probe); ok {
			k, _ := strconv.ParseInt(seq, 10, 64)
			if k > heard.Load() {
				heard.Store(k)
			}
			if k == sent.Load() {
				ever.Store(true)
				h.deaf.Store(false)
				h.trust()
			}
			continue
		}
		if ids, from, ok := ParsePayload(h.prefix, n.Payload); ok && from != h.token {
			for _, id := range ids {
				h.views.changed(id)
			}
		}
	}
}

var (
	errProbesMissed = errors.New("pgtenant: the listener's probes stopped arriving")
	errDeaf         = errors.New("pgtenant: no probe arrived on the listening connection")
)

// probe sends a probe every ProbeEvery, the first at once. When the last
// one has not come back by the time of the next, the views are not
// trusted; after missedProbes in a row the session ends (for a connection
// that never heard one: after as long).
func (h *Hub) probe(ctx context.Context, stop context.CancelCauseFunc, probe string, sent, heard *atomic.Int64, ever *atomic.Bool) {
	t := time.NewTicker(ProbeEvery)
	defer t.Stop()
	missed := 0
	for {
		n := sent.Add(1)
		_ = send(h.cfg.Notify, probe+strconv.FormatInt(n, 10)) // a failure shows as a missed probe
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if heard.Load() >= n {
			missed = 0
			continue
		}
		h.distrust()
		if missed++; missed >= missedProbes {
			if ever.Load() {
				stop(errProbesMissed)
			} else {
				stop(errDeaf)
			}
			return
		}
	}
}

package tenant

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/pgtenant/pgtenant/internal/engine"
)

// handle is what a Router, a MetaBackend and an Admin each hold: the
// Factory's core, the tenant they are pinned to (if any), their own closed
// flag and the streams their Close ends. Closing a handle gives its
// reference to the core back; the last one closes the core.
type handle struct {
	core      *core
	pinned    string // the tenant of a Factory.ForTenant handle; "" otherwise
	release   func()
	closed    atomic.Bool
	closeOnce sync.Once
	streams   engine.Tracker // open streams, ended by Close
}

// track returns a context for an operation that may outlast a quick call
// (StoreData, a reader, a writer), which Close ends with ErrClosed, and the
// function to call when the operation is over.
func (h *handle) track(ctx context.Context) (context.Context, func()) { return h.streams.Track(ctx) }

// close ends the handle's streams (their transactions roll back) and
// gives its reference to the core back, once.
func (h *handle) close() {
	h.closeOnce.Do(func() {
		h.closed.Store(true)
		h.streams.Close()
		h.release()
	})
}

// closedErr puts ErrClosed in the chain of an error caused by Close ending
// the operation's context.
func closedErr(ctx context.Context, err error) error { return engine.ClosedErr(ctx, err) }

// resolve finds and validates the call's tenant; no SQL runs before it.
func (h *handle) resolve(ctx context.Context, messageID string) (string, error) {
	if h.closed.Load() {
		return "", ErrClosed
	}
	id, err := h.core.resolver.Resolve(ctx, messageID)
	if h.pinned != "" {
		switch {
		case errors.Is(err, ErrNoTenant) || (err == nil && id == ""):
			return h.pinned, nil
		case err == nil && id != h.pinned:
			return "", &TenantMismatchError{Want: h.pinned, Got: id}
		}
	}
	if err != nil {
		if errors.Is(err, ErrNoTenant) || errors.Is(err, ErrInvalidTenant) {
			return "", err
		}
		return "", fmt.Errorf("%w: resolver: %w", ErrNoTenant, err)
	}
	if id == "" {
		return "", ErrNoTenant
	}
	if err := Validate(id); err != nil {
		return "", err
	}
	return id, nil
}

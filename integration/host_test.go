package integration

import (
	"context"
	"errors"
	"testing"

	"github.com/pgtenant/pgtenant/backend"
	"github.com/pgtenant/pgtenant/integration/conformance"
	"github.com/pgtenant/pgtenant/tenant"
)

// host is what a queue host holds on one Factory: a Router (the data
// path) and an Admin, on the Factory's one pool.
type host struct {
	*tenant.Router
	*tenant.Admin
}

// openHost opens a Router and an Admin on f.
func openHost(f *tenant.Factory) (*host, error) {
	ctx := context.Background()
	r, err := f.Open(ctx)
	if err != nil {
		return nil, err
	}
	a, err := f.OpenAdmin(ctx)
	if err != nil {
		_ = r.Close()
		return nil, err
	}
	return &host{Router: r, Admin: a}, nil
}

// Close closes the Router and the Admin.
func (h *host) Close() error { return errors.Join(h.Router.Close(), h.Admin.Close()) }

// newHost is openHost for a test: it fails the test on error and closes
// the host when the test ends.
func newHost(t testing.TB, f *tenant.Factory) *host {
	t.Helper()
	h, err := openHost(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// newMeta opens a metadata backend on f, closed when the test ends.
func newMeta(t testing.TB, f *tenant.Factory) *tenant.MetaBackend {
	t.Helper()
	return conformance.MustOpen(t, f.Meta().Open)
}

// newAdmin opens an Admin on f, closed when the test ends.
func newAdmin(t testing.TB, f *tenant.Factory) *tenant.Admin {
	t.Helper()
	return conformance.MustOpen(t, f.OpenAdmin)
}

// newRouter opens a Router on f, closed when the test ends.
func newRouter(t testing.TB, f *tenant.Factory) *tenant.Router {
	t.Helper()
	return conformance.MustOpen(t, f.Open)
}

// newBackend opens the single-table backend of f, closed when the test
// ends.
func newBackend(t testing.TB, f *backend.Factory) *backend.Backend {
	t.Helper()
	return conformance.MustOpen(t, f.Open)
}

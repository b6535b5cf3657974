package integration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/pgtenant/pgtenant/integration/conformance"
	"github.com/pgtenant/pgtenant/internal/pgtest"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
)

// TestAdminInfo follows one tenant through absent, active and dropped, and
// back: Info reports its status, version and location as the registry
// records them.
func TestAdminInfo(t *testing.T) {
	t.Parallel()
	a := newAdmin(t, tenant.NewFactory(pgtest.NewDatabase(t)).WithIsolation(tenant.TablePerTenant).WithConnectionLimits(2, 0))
	bg := context.Background()
	check := func(step string, status tenant.Status, version int) {
		t.Helper()
		info, err := a.Info(bg, "acme")
		if err != nil || info.Tenant != "acme" || info.Status != status || info.Version != version ||
			info.Location.Table.String() != "public.t_acme" {
			t.Fatalf("%s: Info = %+v, %v; want %s at version %d", step, info, err, status, version)
		}
	}
	check("before Provision", tenant.Absent, 0)
	if err := a.Provision(bg, "acme"); err != nil {
		t.Fatal(err)
	}
	check("after Provision", tenant.Active, schema.CurrentVersion)
	if err := a.Drop(bg, "acme"); err != nil {
		t.Fatal(err)
	}
	check("after Drop", tenant.Dropped, schema.CurrentVersion)
	if err := a.Provision(bg, "acme"); err != nil {
		t.Fatal(err)
	}
	check("provisioned again", tenant.Active, schema.CurrentVersion)
	if _, err := a.Info(bg, "Bad Id"); !errors.Is(err, tenant.ErrInvalidTenant) {
		t.Fatalf("Info of an invalid id = %v, want ErrInvalidTenant", err)
	}
	if got := fmt.Sprint(tenant.Absent, tenant.Active, tenant.Dropped); got != "absent active dropped" {
		t.Fatalf("Status strings: %q", got)
	}
}

// retryLog is a slog handler that reports the tenants whose creation was
// tried again.
type retryLog struct{ retried chan string }

func (h retryLog) Enabled(context.Context, slog.Level) bool { return true }
func (h retryLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h retryLog) WithGroup(string) slog.Handler            { return h }
func (h retryLog) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "trying again") {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "tenant" {
				select {
				case h.retried <- a.Value.String():
				default:
				}
			}
			return true
		})
	}
	return nil
}

// TestProvisionRetriesTransientBounds makes tenant creations hit a lock
// timeout: a session holds the registry in EXCLUSIVE mode while
// ProvisionMany runs on connections with lock_timeout=100ms. Each creation
// times out, is tried again (seen in the log), and once the lock is gone
// every tenant is provisioned: none fails.
func TestProvisionRetriesTransientBounds(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	log := retryLog{retried: make(chan string, 1)}
	f := tenant.NewFactory(dsn+"&options=-c%20lock_timeout%3D100ms").WithConnectionLimits(4, 0).
		WithLogger(slog.New(log))
	a := newAdmin(t, f)
	bg := context.Background()
	pool := pgtest.NewPool(t, dsn, nil)
	tx, err := pool.Begin(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(bg)
	if _, err := tx.Exec(bg, "LOCK TABLE "+schema.RegistrySchema+".tenants IN EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	ids := []string{"r-1", "r-2", "r-3"}
	type result struct {
		res tenant.ProvisionResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := a.ProvisionMany(bg, ids, tenant.BatchOptions{Concurrency: 3})
		done <- result{res, err}
	}()
	if id := <-log.retried; !slices.Contains(ids, id) {
		t.Fatalf("retried %q, not one of %v", id, ids)
	}
	if err := tx.Commit(bg); err != nil {
		t.Fatal(err)
	}
	got := <-done
	if got.err != nil || got.res.Provisioned != len(ids) || len(got.res.Failed) != 0 {
		t.Fatalf("ProvisionMany = %+v, %v; want all %d provisioned", got.res, got.err, len(ids))
	}
	r := newHost(t, f)
	for _, id := range ids {
		conformance.MustStore(t, r, tenant.WithTenant(bg, id), "m", []byte(id))
	}
}

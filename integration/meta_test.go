package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/integration/conformance"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
	metastorage "schneider.vip/retryspool/storage/meta"
)

// TestMetaConformance runs the metadata suite in every mode, on backends
// pinned to a tenant (ForTenant) and on context-routed ones.
func TestMetaConformance(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		var n atomic.Int64
		t.Run("pinned", func(t *testing.T) {
			conformance.ExerciseMeta(t, func(t *testing.T) (metastorage.Backend, context.Context) {
				b, err := rb.factory.ForTenant(fmt.Sprintf("pinned-%d", n.Add(1))).Meta().Create()
				if err != nil {
					t.Fatal(err)
				}
				return b, context.Background()
			})
		})
		t.Run("routed", func(t *testing.T) {
			conformance.ExerciseMeta(t, func(t *testing.T) (metastorage.Backend, context.Context) {
				b, err := rb.factory.Meta().Create()
				if err != nil {
					t.Fatal(err)
				}
				return b, tenant.WithTenant(context.Background(), fmt.Sprintf("routed-%d", n.Add(1)))
			})
		})
	})
}

// TestMetaTenantsAreSeparate stores the same message ids in two tenants.
func TestMetaTenantsAreSeparate(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		bg := context.Background()
		a := newMeta(t, rb.factory.ForTenant("alpha"))
		b := newMeta(t, rb.factory.ForTenant("beta"))
		conformance.MustStoreMeta(t, a, bg, "same", conformance.Meta(1, metastorage.StateIncoming))
		if _, err := b.GetMeta(bg, "same"); !errors.Is(err, metastorage.ErrMessageNotFound) {
			t.Fatalf("beta reads alpha's metadata: %v", err)
		}
		for _, err := range []error{b.DeleteMeta(bg, "same"), b.MoveToState(bg, "same", metastorage.StateIncoming, metastorage.StateActive),
			b.UpdateMeta(bg, "same", conformance.Meta(2, metastorage.StateActive))} {
			if !errors.Is(err, metastorage.ErrMessageNotFound) {
				t.Fatalf("beta changed alpha's metadata: %v", err)
			}
		}
		conformance.MustStoreMeta(t, b, bg, "same", conformance.Meta(2, metastorage.StateBounce))
		ga, _ := a.GetMeta(bg, "same")
		gb, _ := b.GetMeta(bg, "same")
		if ga.ID != "meta-1" || ga.State != metastorage.StateIncoming || gb.ID != "meta-2" || gb.State != metastorage.StateBounce {
			t.Fatalf("alpha %+v, beta %+v", ga, gb)
		}
		res, err := b.ListMessages(bg, metastorage.StateIncoming, metastorage.MessageListOptions{})
		if err != nil || res.Total != 0 {
			t.Fatalf("beta lists alpha's messages: %+v, %v", res, err)
		}
		if n := a.GetStateCount(metastorage.StateIncoming); n != 1 {
			t.Fatalf("alpha counts %d incoming", n)
		}
		if n := b.GetStateCount(metastorage.StateIncoming); n != 0 {
			t.Fatalf("beta counts %d incoming", n)
		}
	})
}

// TestPinnedRefusesOtherTenants checks a pinned data Router and metadata
// backend: a context without a tenant is served as the pinned one, a
// context naming another is refused with ErrTenantMismatch and nothing is
// stored, and an invalid pinned id fails at Create.
func TestPinnedRefusesOtherTenants(t *testing.T) {
	t.Parallel()
	rb := setupRouter(t, schema.SharedTable)
	bg := context.Background()
	pinned := rb.factory.ForTenant("acme")
	data := newRouter(t, pinned)
	meta := newMeta(t, pinned)
	conformance.MustStore(t, data, bg, "m", []byte("acme's"))
	conformance.MustStoreMeta(t, meta, bg, "m", conformance.Meta(1, metastorage.StateIncoming))
	conformance.MustRead(t, data, tenant.WithTenant(bg, "acme"), "m", []byte("acme's"))
	other := tenant.WithTenant(bg, "globex")
	if _, err := data.StoreData(other, "m2", strings.NewReader("x")); !errors.Is(err, tenant.ErrTenantMismatch) {
		t.Fatalf("StoreData with another tenant = %v, want ErrTenantMismatch", err)
	}
	if _, err := data.GetDataReader(other, "m"); !errors.Is(err, tenant.ErrTenantMismatch) {
		t.Fatalf("GetDataReader with another tenant = %v", err)
	}
	if err := meta.StoreMeta(other, "m2", conformance.Meta(1, metastorage.StateIncoming)); !errors.Is(err, tenant.ErrTenantMismatch) {
		t.Fatalf("StoreMeta with another tenant = %v", err)
	}
	if _, err := meta.NewMessageIterator(other, metastorage.StateIncoming, 10); !errors.Is(err, tenant.ErrTenantMismatch) {
		t.Fatalf("NewMessageIterator with another tenant = %v", err)
	}
	if n := rb.count(t, "SELECT count(*) FROM pgtenant.tenants WHERE tenant_id = 'globex'"); n != 0 {
		t.Fatal("a refused call created the other tenant")
	}
	if n := rb.count(t, "SELECT count(*) FROM public.retryspool_data WHERE message_id = 'm2'"); n != 0 {
		t.Fatal("a refused call stored a body")
	}
	for _, id := range []string{"", "a b", "-x"} {
		if _, err := rb.factory.ForTenant(id).Create(); !errors.Is(err, tenant.ErrInvalidTenant) {
			t.Errorf("ForTenant(%q).Create() = %v, want ErrInvalidTenant", id, err)
		}
		if _, err := rb.factory.ForTenant(id).Meta().Create(); !errors.Is(err, tenant.ErrInvalidTenant) {
			t.Errorf("ForTenant(%q).Meta().Create() = %v, want ErrInvalidTenant", id, err)
		}
	}
}

// TestMetaMoveRace has 64 goroutines, on two hosts (Factories), move the
// same message from incoming at once: exactly one wins.
func TestMetaMoveRace(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		bg := context.Background()
		var hosts []metastorage.Backend
		for _, f := range []*tenant.Factory{rb.factory, tenant.NewFactory(rb.dsn).WithIsolation(mode).WithConnectionLimits(8, 0)} {
			b := newMeta(t, f.ForTenant("racer"))
			hosts = append(hosts, b)
		}
		for round := range 5 {
			id := fmt.Sprint("m", round)
			conformance.MustStoreMeta(t, hosts[0], bg, id, conformance.Meta(1, metastorage.StateIncoming))
			var (
				wg                sync.WaitGroup
				won, lost, failed atomic.Int64
			)
			for g := range 64 {
				wg.Go(func() {
					err := hosts[g%2].MoveToState(bg, id, metastorage.StateIncoming, metastorage.StateActive)
					switch {
					case err == nil:
						won.Add(1)
					case errors.Is(err, metastorage.ErrStateConflict):
						lost.Add(1)
					default:
						failed.Add(1)
						t.Error(err)
					}
				})
			}
			wg.Wait()
			if won.Load() != 1 || lost.Load() != 63 {
				t.Fatalf("round %d: %d moves won, %d lost, %d failed; want exactly one winner", round, won.Load(), lost.Load(), failed.Load())
			}
		}
	})
}

// TestDropAndPurgeCoverMeta drops and purges tenants with metadata.
func TestDropAndPurgeCoverMeta(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		r := rb.router(t)
		bg := context.Background()
		meta := newMeta(t, rb.factory.ForTenant("full"))
		for i := range 3 {
			conformance.MustStoreMeta(t, meta, bg, fmt.Sprint("m", i), conformance.Meta(i, metastorage.StateDeferred))
		}
		st, err := r.Stats(bg, "full")
		if err != nil || st.Queued != 3 || st.States["deferred"] != 3 {
			t.Fatalf("Stats = %+v, %v; want 3 deferred", st, err)
		}
		loc, _ := r.Locate("full")
		where := ""
		if loc.Partition != "" {
			where = " WHERE tenant_id = 'full'"
		}
		if _, err := rb.pool.Exec(bg, "UPDATE "+loc.Meta.Sanitize()+" SET updated = now() - interval '2 hours'"+where); err != nil {
			t.Fatal(err)
		}
		conformance.MustStoreMeta(t, meta, bg, "fresh", conformance.Meta(9, metastorage.StateIncoming))
		if _, err := r.Purge(bg, "full", time.Hour); err != nil {
			t.Fatal(err)
		}
		if st, _ := r.Stats(bg, "full"); st.Queued != 1 || st.States["incoming"] != 1 {
			t.Fatalf("after Purge: %+v; want the fresh one", st)
		}
		if err := r.Drop(bg, "full"); err != nil {
			t.Fatal(err)
		}
		if _, err := meta.GetMeta(bg, "fresh"); !errors.Is(err, metastorage.ErrMessageNotFound) {
			t.Fatalf("metadata after Drop: %v", err)
		}
		if err := meta.StoreMeta(bg, "late", conformance.Meta(1, metastorage.StateIncoming)); !errors.Is(err, tenant.ErrTenantDeleted) {
			t.Fatalf("StoreMeta after Drop = %v, want ErrTenantDeleted", err)
		}
		if n := rb.count(t, "SELECT count(*) FROM pg_catalog.pg_class WHERE relname = $1", loc.Meta.Name); mode != schema.SharedTable && n != 0 {
			t.Fatal("the metadata table survived the drop")
		}
	})
}

// TestMetaNotificationsCoalesce writes metadata of 8 tenants from 16
// goroutines, 400 writes in all, while a plain connection LISTENs on
// pgtenant's channel: every tenant written is announced to other hosts,
// after its writes, in far fewer notifications than writes (PostgreSQL
// serialises the commits of notifying transactions, so one per write
// would queue every write behind that lock).
func TestMetaNotificationsCoalesce(t *testing.T) {
	t.Parallel()
	rb := setupRouter(t, schema.SharedTable)
	ctx := context.Background()
	listen, err := pgx.Connect(ctx, rb.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer listen.Close(ctx)
	if _, err := listen.Exec(ctx, "LISTEN pgtenant_meta"); err != nil {
		t.Fatal(err)
	}
	const tenants, writers, perWriter = 8, 16, 25
	metas := make([]metastorage.Backend, tenants)
	for i := range metas {
		if metas[i], err = rb.factory.ForTenant(fmt.Sprintf("n%d", i)).Meta().Create(); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				id := fmt.Sprintf("m%d-%d", w, i)
				if err := metas[(w+i)%tenants].StoreMeta(ctx, id, conformance.Meta(1, metastorage.StateIncoming)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, m := range metas {
		m.Close() // the last Close sends what is pending
	}
	// A notification of our own, committed after every one of pgtenant's,
	// arrives after them.
	if _, err := rb.pool.Exec(ctx, "NOTIFY pgtenant_meta, 'end'"); err != nil {
		t.Fatal(err)
	}
	announced := map[string]bool{}
	notifications := 0
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		n, err := listen.WaitForNotification(wctx)
		if err != nil {
			t.Fatalf("waiting for notifications: %v", err)
		}
		if n.Payload == "end" {
			break
		}
		if strings.HasPrefix(n.Payload, "!probe ") { // the listener's own
			continue
		}
		notifications++
		_, ids, ok := strings.Cut(n.Payload, "/")
		if !ok {
			t.Fatalf("payload %q has no store prefix", n.Payload)
		}
		for _, id := range strings.Split(ids, "\n") {
			if !strings.HasPrefix(id, "!from ") { // the sender's token
				announced[id] = true
			}
		}
	}
	for i := range tenants {
		if id := fmt.Sprintf("n%d", i); !announced[id] {
			t.Errorf("tenant %s was written but never announced", id)
		}
	}
	if writes := writers * perWriter; notifications*2 > writes {
		t.Errorf("%d notifications for %d writes, want them coalesced (at most half as many)", notifications, writes)
	}
	t.Logf("%d writes of %d tenants announced in %d notifications", writers*perWriter, tenants, notifications)
}

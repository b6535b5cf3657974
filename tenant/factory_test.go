package tenant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgtenant/pgtenant/internal/engine"
	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/internal/quota"
	"go.opentelemetry.io/otel/metric/noop"
	datastorage "schneider.vip/retryspool/storage/data"
)

type nopTracer struct{}

func (nopTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}
func (nopTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TestWithReturnsCopies applies every WithX option to one Factory and checks
// that each returns a new Factory that differs from the receiver in exactly
// the option's field, shares no Router state with it, and leaves the
// receiver untouched.
func TestWithReturnsCopies(t *testing.T) {
	base := NewFactory("postgres://u@h/db")
	snapshot := *base
	options := map[string]func(*Factory) *Factory{
		"pool":         func(f *Factory) *Factory { return f.WithPool(&pgxpool.Pool{}) },
		"isolation":    func(f *Factory) *Factory { return f.WithIsolation(SharedTable) },
		"table":        func(f *Factory) *Factory { return f.WithTableName("q.data") },
		"tableSchema":  func(f *Factory) *Factory { return f.WithTableSchema("queues") },
		"maxOpen":      func(f *Factory) *Factory { return f.WithConnectionLimits(3, base.maxIdle) },
		"connLifetime": func(f *Factory) *Factory { return f.WithMaxConnLifetime(time.Minute) },
		"cacheSize":    func(f *Factory) *Factory { return f.WithCacheSize(7) },
		"resolver": func(f *Factory) *Factory {
			return f.WithResolver(ResolverFunc(func(context.Context, string) (string, error) { return "", nil }))
		},
		"mode":              func(f *Factory) *Factory { return f.WithExecMode(pgx.QueryExecModeCacheDescribe) },
		"stmtCacheCap":      func(f *Factory) *Factory { return f.WithStatementCacheCapacity(9) },
		"lockTimeout":       func(f *Factory) *Factory { return f.WithLockTimeout(time.Second) },
		"maxSize":           func(f *Factory) *Factory { return f.WithMaxMessageSize(11) },
		"tenantConcurrency": func(f *Factory) *Factory { return f.WithTenantConcurrency(2) },
		"quotaBytes":        func(f *Factory) *Factory { return f.WithQuota(5, base.quotaMessages) },
		"meterProvider":     func(f *Factory) *Factory { return f.WithMeterProvider(noop.NewMeterProvider()) },
		"tenantAttr":        func(f *Factory) *Factory { return f.WithTenantAttribute(true) },
		"logger":            func(f *Factory) *Factory { return f.WithLogger(slog.Default()) },
		"tracer":            func(f *Factory) *Factory { return f.WithQueryTracer(nopTracer{}) },
		"affinity":          func(f *Factory) *Factory { return f.WithConnectionAffinity(4) },
		"listenDSN":         func(f *Factory) *Factory { return f.WithListenDSN("postgres://direct/db") },
		"viewBytes":         func(f *Factory) *Factory { return f.WithViewMemory(1 << 20) },
		"metaSize":          func(f *Factory) *Factory { return f.WithMaxMetadataSize(99) },
	}
	typ := reflect.TypeOf(Factory{})
	covered := map[string]bool{"dsn": true, "shared": true, "maxIdle": true, "quotaMessages": true, "pinned": true, "pin": true,
		"parent": true, "set": true}
	for field, with := range options {
		c := with(base)
		if c == base || c.shared == base.shared {
			t.Errorf("With for %s returned the receiver or shares its Routers", field)
		}
		for i := range typ.NumField() {
			name := typ.Field(i).Name
			if name == "shared" || name == "set" {
				continue
			}
			// fmt reads unexported fields; funcs print as their address.
			same := fmt.Sprint(reflect.ValueOf(*c).Field(i)) == fmt.Sprint(reflect.ValueOf(snapshot).Field(i))
			if name == field && same {
				t.Errorf("With for %s did not change it", field)
			}
			if name != field && !same {
				t.Errorf("With for %s also changed %s", field, name)
			}
		}
		covered[field] = true
	}
	for i := range typ.NumField() {
		if !covered[typ.Field(i).Name] {
			t.Errorf("field %s has no With option in this test", typ.Field(i).Name)
		}
	}
	if !reflect.DeepEqual(base.table, snapshot.table) || base.shared != snapshot.shared || base.maxOpen != snapshot.maxOpen {
		t.Error("the receiver changed")
	}
	pinned := base.ForTenant("acme")
	if pinned == base || pinned.shared != base.shared || pinned.pinned != "acme" || base.pinned != "" {
		t.Errorf("ForTenant: a copy pinned to acme sharing the receiver's Routers, got %+v", pinned)
	}
	if again := pinned.WithCacheSize(3); again.shared != base.shared || again.pinned != "acme" {
		t.Error("a WithX on a pinned Factory leaves its parent's state or loses the pin")
	}
	if got := base.WithConnectionLimits(3, 2); got.maxOpen != 3 || got.maxIdle != 2 {
		t.Errorf("WithConnectionLimits: %d, %d", got.maxOpen, got.maxIdle)
	}
	if got := base.WithQuota(5, 6); got.quotaBytes != 5 || got.quotaMessages != 6 {
		t.Errorf("WithQuota: %d, %d", got.quotaBytes, got.quotaMessages)
	}
}

func TestPoolOptionsFollowTheFactory(t *testing.T) {
	o := NewFactory("x").WithConnectionLimits(6, 2).WithMaxConnLifetime(3 * time.Minute).
		WithExecMode(pgx.QueryExecModeCacheDescribe).WithStatementCacheCapacity(99).poolOptions()
	want := pg.PoolOptions{MaxOpen: 6, MaxIdle: 2, Lifetime: 3 * time.Minute, Mode: pgx.QueryExecModeCacheDescribe, StatementCache: 99}
	if o != want {
		t.Fatalf("pool options %+v, want %+v", o, want)
	}
	if d := NewFactory("x").poolOptions(); d.StatementCache != DefaultStatementCacheCapacity || d.Lifetime != 0 {
		t.Fatalf("default pool options %+v", d)
	}
}

func TestZeroFactoryFails(t *testing.T) {
	var f Factory
	if _, err := f.Create(); err == nil {
		t.Fatal("a zero Factory made a Router")
	}
}

// TestFactoryRefusesFootguns checks the options that cannot work: a WithX
// on a pinned Factory (it would need a pool of its own), and pool options
// with WithPool (pgtenant does not configure a pool it does not own). Both
// fail at open, before any connection, naming the option.
func TestFactoryRefusesFootguns(t *testing.T) {
	f := NewFactory("postgres://nobody@127.0.0.1:1/none?connect_timeout=1").WithLogger(slog.Default())
	pinned := f.ForTenant("acme")
	if err := pinned.check(); err != nil {
		t.Fatalf("a pinned Factory whose options were set on the parent: %v", err)
	}
	for name, c := range map[string]*Factory{
		"WithLogger":    pinned.WithLogger(slog.Default()),
		"WithCacheSize": pinned.WithCacheSize(3),
	} {
		_, err := c.Create()
		if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "ForTenant") {
			t.Errorf("%s on a pinned Factory: %v", name, err)
		}
		if _, err := c.Meta().Create(); err == nil {
			t.Errorf("%s on a pinned Factory: its metadata backend opened", name)
		}
	}
	if _, err := pinned.OpenAdmin(context.Background()); err == nil {
		t.Error("OpenAdmin on a pinned Factory succeeded")
	}
	pool := &pgxpool.Pool{}
	for name, c := range map[string]*Factory{
		"WithConnectionLimits":       f.WithConnectionLimits(3, 1).WithPool(pool),
		"WithConnectionAffinity":     f.WithPool(pool).WithConnectionAffinity(2),
		"WithMaxConnLifetime":        f.WithPool(pool).WithMaxConnLifetime(time.Minute),
		"WithStatementCacheCapacity": f.WithPool(pool).WithStatementCacheCapacity(9),
		"WithQueryTracer":            f.WithPool(pool).WithQueryTracer(nopTracer{}),
	} {
		if _, err := c.Create(); err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "WithPool") {
			t.Errorf("%s with WithPool: %v", name, err)
		}
	}
}

// TestFactoryRefusesBadConfigurationBeforeSQL opens nothing: every case
// fails before a pool is opened (the DSN points nowhere).
func TestFactoryRefusesBadConfigurationBeforeSQL(t *testing.T) {
	f := NewFactory("postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	cases := map[string]*Factory{
		"text mode":        f.WithExecMode(pgx.QueryExecModeSimpleProtocol),
		"reserved table":   f.WithTableName("t_spool"),
		"registry schema":  f.WithIsolation(SharedTable).WithTableName("pgtenant.tenants"),
		"bad schema":       f.WithIsolation(TablePerTenant).WithTableSchema("t_acme"),
		"unknown mode":     f.WithIsolation(Isolation(9)),
		"schema in schema": f.WithTableName("queue.data"),
	}
	for name, c := range cases {
		_, err := c.Create()
		if err == nil || errors.Is(err, ErrConnection) {
			t.Errorf("%s: %v, want a configuration error before any connection", name, err)
		}
	}
	if _, err := f.WithCacheSize(0).WithPool(&pgxpool.Pool{}).Create(); err == nil || !strings.Contains(err.Error(), "cache size") {
		t.Errorf("cache size 0: %v", err)
	}
}

func TestResolve(t *testing.T) {
	boom := errors.New("lookup failed")
	cases := []struct {
		name     string
		resolver Resolver
		ctx      context.Context
		want     error
		id       string
	}{
		{"context", ContextResolver, WithTenant(context.Background(), "acme"), nil, "acme"},
		{"no tenant", ContextResolver, context.Background(), ErrNoTenant, ""},
		{"empty tenant", ContextResolver, WithTenant(context.Background(), ""), ErrNoTenant, ""},
		{"invalid", ContextResolver, WithTenant(context.Background(), "a b"), ErrInvalidTenant, ""},
		{"resolver error", ResolverFunc(func(context.Context, string) (string, error) { return "", boom }), context.Background(), ErrNoTenant, ""},
		{"resolver empty", ResolverFunc(func(context.Context, string) (string, error) { return "", nil }), context.Background(), ErrNoTenant, ""},
		{"resolver invalid", ResolverFunc(func(context.Context, string) (string, error) { return "-x", nil }), context.Background(), ErrInvalidTenant, ""},
		{"by message id", ResolverFunc(func(_ context.Context, m string) (string, error) { return strings.Split(m, "/")[0], nil }), context.Background(), nil, "globex"},
	}
	for _, c := range cases {
		h := &handle{core: &core{resolver: c.resolver}}
		id, err := h.resolve(c.ctx, "globex/1")
		if !errors.Is(err, c.want) || (c.want == nil && id != c.id) {
			t.Errorf("%s: resolve = %q, %v; want %q, %v", c.name, id, err, c.id, c.want)
		}
		if c.name == "resolver error" && !errors.Is(err, boom) {
			t.Errorf("the resolver's own error is lost: %v", err)
		}
	}
	closed := &handle{core: &core{resolver: ContextResolver}}
	closed.closed.Store(true)
	if _, err := closed.resolve(WithTenant(context.Background(), "acme"), "m"); !errors.Is(err, ErrClosed) {
		t.Errorf("closed Router: %v", err)
	}
	pinned := &handle{core: &core{resolver: ContextResolver}, pinned: "acme"}
	_, err := pinned.resolve(WithTenant(context.Background(), "globex"), "m")
	var mismatch *TenantMismatchError
	if !errors.As(err, &mismatch) || mismatch.Want != "acme" || mismatch.Got != "globex" || !errors.Is(err, ErrTenantMismatch) {
		t.Errorf("pinned to acme, called for globex: %v", err)
	}
}

func TestErrorsAreClassified(t *testing.T) {
	cache, _ := lru.New[string, *entry](4)
	c := &core{ensured: cache}
	cache.Add("acme", nil)
	if err := c.writeErr("acme", engine.ErrGuardFailed); !errors.Is(err, ErrTenantDeleted) {
		t.Errorf("a refused guard = %v, want ErrTenantDeleted", err)
	}
	if cache.Contains("acme") {
		t.Error("a refused guard left the tenant cached")
	}
	err := c.writeErr("acme", fmt.Errorf("put: %w", quota.Limits{Bytes: 10}.Check(12, 1)))
	var qe *QuotaError
	if !errors.As(err, &qe) || qe.Tenant != "acme" || qe.Unit != "bytes" || qe.Used != 12 || qe.Limit != 10 || !errors.Is(err, ErrQuotaExceeded) {
		t.Errorf("a refused quota = %#v", err)
	}
	cases := map[error]string{
		nil: "ok",
		fmt.Errorf("x: %w", datastorage.ErrDataNotFound): "not_found",
		ErrTenantDeleted:                      "tenant_deleted",
		ErrTooLarge:                           "too_large",
		ErrQuotaExceeded:                      "quota_exceeded",
		context.DeadlineExceeded:              "cancelled",
		fmt.Errorf("x: %w", context.Canceled): "cancelled",
		ErrConnection:                         "connection",
		errors.New("other"):                   "error",
	}
	for err, want := range cases {
		if got := result(err); got != want {
			t.Errorf("result(%v) = %s, want %s", err, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, id := range []string{"acme", "Acme", "acme-corp.eu_1", "0", strings.Repeat("x", 128), "6f1c1f0e-3a5b-4c2d-9e8f-0a1b2c3d4e5f"} {
		if err := Validate(id); err != nil {
			t.Errorf("Validate(%q) = %v", id, err)
		}
	}
	for _, id := range []string{"", "-acme", ".x", "a b", "a/b", "a\x00b", "ümlaut", strings.Repeat("x", 129), "a'; DROP TABLE x; --"} {
		if err := Validate(id); !errors.Is(err, ErrInvalidTenant) {
			t.Errorf("Validate(%q) = %v, want ErrInvalidTenant", id, err)
		}
	}
}

// TestConnectFailureSaysWhatToCheck opens Factories whose server cannot be
// reached: the error is one sentence naming the address, the database and
// what to check, and it still is ErrConnection. With no DSN it says that
// none was given.
func TestConnectFailureSaysWhatToCheck(t *testing.T) {
	t.Setenv("PGHOST", "127.0.0.1")
	t.Setenv("PGPORT", "1")
	t.Setenv("PGDATABASE", "shop")
	t.Setenv("PGUSER", "alice")
	t.Setenv("PGCONNECT_TIMEOUT", "5")
	for _, c := range []struct {
		dsn, hint string
	}{
		{"", "no DSN was given"},
		{"postgres://alice@127.0.0.1:1/shop", ""},
	} {
		_, err := NewFactory(c.dsn).OpenAdmin(context.Background())
		msg := fmt.Sprint(err)
		if !errors.Is(err, ErrConnection) || strings.Count(msg, "pgtenant:") != 1 ||
			!strings.Contains(msg, `cannot connect to PostgreSQL at 127.0.0.1:1 (database "shop", user "alice"): connection refused; check`) {
			t.Fatalf("NewFactory(%q).OpenAdmin = %v", c.dsn, err)
		}
		if strings.Contains(msg, "no DSN was given") != (c.hint != "") {
			t.Fatalf("NewFactory(%q).OpenAdmin = %v: the no-DSN hint is wrong", c.dsn, err)
		}
	}
}

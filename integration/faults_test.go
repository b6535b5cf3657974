package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
	datastorage "schneider.vip/retryspool/storage/data"
)

// This file holds the fault suite's load generator and ledger. The load
// runs several tenants' StoreData, streaming writers, readers and deletes,
// small and 8 MiB bodies, from 16 goroutines. Every message id is owned by
// one goroutine, so the ledger knows, for each message, the set of states
// it may be in: one state after an acknowledged write or delete, more after
// a failed one, whose outcome is unknown. Every read, during the load and
// after it, must return one of those states exactly: an acknowledged write
// is never lost, a failed one never half-applied, and a tenant never sees
// another tenant's body (the same ids are used in every tenant, with
// different bodies).

// state is what a message may hold: nothing, or a body known by its size
// and SHA-256.
type state struct {
	present bool
	size    int64
	sum     [sha256.Size]byte
}

var absent state

func (s state) String() string {
	if !s.present {
		return "absent"
	}
	return fmt.Sprintf("%d bytes %x", s.size, s.sum[:4])
}

// slot is one message of one tenant, used by one goroutine only.
type slot struct {
	tenant, id string
	may        []state
	writes     uint64
}

func (s *slot) known(st state) { s.may = []state{st} }

func (s *slot) unknown(st state) {
	if !slices.Contains(s.may, st) {
		s.may = append(s.may, st)
	}
}

// faultLoad is a running load and its findings.
type faultLoad struct {
	r         datastorage.Backend
	tenants   []string
	opTimeout time.Duration
	bigSize   int64

	stop      chan struct{}
	wg        sync.WaitGroup
	slots     [][]*slot // per worker
	ok, fail  atomic.Int64
	mu        sync.Mutex
	errKinds  map[string]int // failures by kind
	problems  []string       // ledger violations, unexpected errors, hangs
	lastError string
	want      int64         // waitOK's target count of successes
	reached   chan struct{} // closed when want is reached
}

const (
	faultWorkers = 16
	slotsPerPair = 2 // message ids per worker and tenant
)

// startLoad starts the load on r over tenants; stopLoad ends it.
func startLoad(t *testing.T, r datastorage.Backend, tenants []string) *faultLoad {
	t.Helper()
	l := &faultLoad{r: r, tenants: tenants, opTimeout: 20 * time.Second, bigSize: 8 << 20,
		stop: make(chan struct{}), errKinds: map[string]int{}}
	for w := range faultWorkers {
		var own []*slot
		for _, tn := range tenants {
			for k := range slotsPerPair {
				own = append(own, &slot{tenant: tn, id: fmt.Sprintf("w%02d-m%d", w, k), may: []state{absent}})
			}
		}
		l.slots = append(l.slots, own)
		l.wg.Go(func() { l.work(w, own) })
	}
	return l
}

// waitOK waits until n more operations have succeeded, or fails t after
// limit: the load makes progress.
func (l *faultLoad) waitOK(t *testing.T, n int64, limit time.Duration) {
	t.Helper()
	l.mu.Lock()
	l.want = l.ok.Load() + n
	reached := make(chan struct{})
	l.reached = reached
	l.mu.Unlock()
	select {
	case <-reached:
	case <-time.After(limit):
		t.Fatalf("load made fewer than %d successful operations in %v; last error: %s", n, limit, l.lastErr())
	}
}

// succeeded counts a successful operation and wakes waitOK.
func (l *faultLoad) succeeded() {
	n := l.ok.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reached != nil && n >= l.want {
		close(l.reached)
		l.reached = nil
	}
}

func (l *faultLoad) lastErr() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastError
}

// stopLoad stops the workers and returns after all of them have.
func (l *faultLoad) stopLoad() {
	close(l.stop)
	l.wg.Wait()
}

func (l *faultLoad) problem(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.problems) < 50 {
		l.problems = append(l.problems, fmt.Sprintf(format, args...))
	}
}

// failed records an operation's error: it must say what happened, as a
// lost connection (tenant.ErrConnection) or the caller's deadline.
func (l *faultLoad) failed(op string, err error) {
	l.fail.Add(1)
	kind := ""
	switch {
	case errors.Is(err, tenant.ErrConnection):
		kind = "connection"
	case errors.Is(err, context.DeadlineExceeded):
		kind = "deadline"
	default:
		l.problem("%s: unexpected error %T: %v", op, err, err)
		kind = "other"
	}
	l.mu.Lock()
	l.errKinds[op+"/"+kind]++
	l.lastError = err.Error()
	l.mu.Unlock()
}

func (l *faultLoad) work(w int, own []*slot) {
	rng := rand.New(rand.NewPCG(uint64(w), 42))
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		s := own[rng.IntN(len(own))]
		ctx, cancel := context.WithTimeout(tenant.WithTenant(context.Background(), s.tenant), l.opTimeout)
		start := time.Now()
		var err error
		switch p := rng.IntN(100); {
		case p < 45:
			err = l.write(ctx, rng, s)
		case p < 80:
			err = l.read(ctx, s)
		default:
			err = l.delete(ctx, s)
		}
		cancel()
		if took := time.Since(start); took > l.opTimeout+5*time.Second {
			l.problem("%s/%s: an operation took %v, past its %v deadline", s.tenant, s.id, took, l.opTimeout)
		}
		if err != nil {
			// Pace a worker whose server is away (pacing, not
			// synchronisation: nothing waits for this).
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// write stores a new body: one in ten is 8 MiB through the streaming
// writer, the rest are up to 64 KiB through StoreData or the writer.
func (l *faultLoad) write(ctx context.Context, rng *rand.Rand, s *slot) error {
	s.writes++
	// A body of its own for every write of every message of every tenant.
	seed := fnv.New64a()
	fmt.Fprintf(seed, "%s/%s/%d", s.tenant, s.id, s.writes)
	size := int64(rng.IntN(64 << 10))
	streaming := rng.IntN(2) == 0
	if rng.IntN(10) == 0 {
		size, streaming = l.bigSize, true
	}
	h := sha256.New()
	body := io.TeeReader(bodyReader(seed.Sum64(), size), h)
	var err error
	op := "store"
	if streaming {
		op = "writer"
		var wc io.WriteCloser
		if wc, err = l.r.GetDataWriter(ctx, s.id); err == nil {
			if _, err = io.Copy(wc, body); err != nil {
				_ = wc.Close()
			} else {
				err = wc.Close()
			}
		}
	} else {
		_, err = l.r.StoreData(ctx, s.id, body)
	}
	st := state{present: true, size: size}
	if err == nil {
		copy(st.sum[:], h.Sum(nil))
		s.known(st)
		l.succeeded()
		return nil
	}
	// The body may have been stored completely; hash the rest of it.
	_, _ = io.Copy(h, body)
	copy(st.sum[:], h.Sum(nil))
	s.unknown(st)
	l.failed(op, err)
	return err
}

func (l *faultLoad) read(ctx context.Context, s *slot) error {
	got, err := readState(ctx, l.r, s.id)
	switch {
	case err != nil:
		l.failed("read", err)
		return err
	case !slices.Contains(s.may, got):
		l.problem("%s/%s: read %v, but it may only be one of %v", s.tenant, s.id, got, s.may)
	default:
		s.known(got)
	}
	l.succeeded()
	return nil
}

func (l *faultLoad) delete(ctx context.Context, s *slot) error {
	err := l.r.DeleteData(ctx, s.id)
	switch {
	case err == nil:
		if len(s.may) == 1 && s.may[0] == absent {
			l.problem("%s/%s: delete of a message that cannot exist succeeded", s.tenant, s.id)
		}
	case errors.Is(err, datastorage.ErrDataNotFound):
		if !slices.Contains(s.may, absent) {
			l.problem("%s/%s: delete found nothing, but it holds one of %v (acknowledged write lost)", s.tenant, s.id, s.may)
		}
	default:
		s.unknown(absent)
		l.failed("delete", err)
		return err
	}
	s.known(absent)
	l.succeeded()
	return nil
}

// readState reads id through b and returns its state; a message that does
// not exist is absent, with a nil error.
func readState(ctx context.Context, b datastorage.Backend, id string) (state, error) {
	rc, err := b.GetDataReader(ctx, id)
	if errors.Is(err, datastorage.ErrDataNotFound) {
		return absent, nil
	}
	if err != nil {
		return state{}, err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return state{}, err
	}
	st := state{present: true, size: n}
	copy(st.sum[:], h.Sum(nil))
	return st, nil
}

// recoverWithin measures how long after a fault ended every tenant can store and
// read again, and fails t if that takes longer than limit. The time
// includes the operations themselves, which run beside the load.
func recoverWithin(t *testing.T, b datastorage.Backend, tenants []string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	body := []byte("probe")
	var last error
	for time.Since(start) < limit {
		last = nil
		for _, tn := range tenants {
			ctx, cancel := context.WithTimeout(tenant.WithTenant(context.Background(), tn), limit)
			_, err := b.StoreData(ctx, "probe", bytes.NewReader(body))
			if err == nil {
				_, err = readState(ctx, b, "probe")
			}
			cancel()
			if err != nil {
				last = err
				break
			}
		}
		if last == nil {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond) // polling for recovery
	}
	t.Fatalf("not recovered %v after the fault: %v", limit, last)
	return 0
}

// check ends the load and verifies the ledger: the problems found during
// the load, then every message read once more, and each tenant's message
// count against the ledger (nothing extra, nothing from another tenant).
func (l *faultLoad) check(t *testing.T, m *modeMux) {
	t.Helper()
	l.stopLoad()
	ctx := context.Background()
	present := map[string]int64{}
	for _, own := range l.slots {
		for _, s := range own {
			tctx := tenant.WithTenant(ctx, s.tenant)
			got, err := readState(tctx, l.r, s.id)
			if err != nil {
				t.Errorf("%s/%s: final read: %v", s.tenant, s.id, err)
				continue
			}
			if !slices.Contains(s.may, got) {
				t.Errorf("%s/%s: holds %v, but may only hold one of %v", s.tenant, s.id, got, s.may)
			}
			if got.present {
				present[s.tenant]++
			}
		}
	}
	for _, tn := range l.tenants {
		n, err := m.stats(ctx, tn)
		if err != nil {
			t.Fatal(err)
		}
		want := present[tn] + 1 // + the recovery probe
		if n != want {
			t.Errorf("tenant %s holds %d messages, the ledger %d", tn, n, want)
		}
		if n, err := m.strayChunks(ctx, tn); err != nil || n != 0 {
			t.Errorf("tenant %s: %d pieces of bodies no message refers to (%v)", tn, n, err)
		}
	}
	for _, p := range l.problems {
		t.Error(p)
	}
	t.Logf("load: %d operations succeeded, %d failed %v", l.ok.Load(), l.fail.Load(), l.errKinds)
}

// modeMux is a datastorage.Backend over one Router per isolation mode, all
// on one pool: tenant "<mode>-<n>" goes to the Router of <mode>, so one load
// covers every mode.
type modeMux struct {
	routers map[string]*host // by mode name
	tenants []string
	pool    *pgxpool.Pool // the routers' pool
}

func newModeMux(t *testing.T, pool *pgxpool.Pool, perMode int) *modeMux {
	t.Helper()
	m := &modeMux{routers: map[string]*host{}, pool: pool}
	for _, mode := range modes {
		r := newHost(t, tenant.NewFactory("").WithPool(pool).WithIsolation(mode))
		m.routers[mode.String()] = r
		for i := range perMode {
			m.tenants = append(m.tenants, fmt.Sprintf("%s-%d", mode, i))
		}
	}
	return m
}

func (m *modeMux) router(ctx context.Context) *host {
	id, _ := tenant.FromContext(ctx)
	for name, r := range m.routers {
		if strings.HasPrefix(id, name+"-") {
			return r
		}
	}
	panic("modeMux: no router for tenant " + id) // a bug in the test
}

func (m *modeMux) StoreData(ctx context.Context, id string, data io.Reader) (int64, error) {
	return m.router(ctx).StoreData(ctx, id, data)
}

func (m *modeMux) GetDataReader(ctx context.Context, id string) (io.ReadCloser, error) {
	return m.router(ctx).GetDataReader(ctx, id)
}

func (m *modeMux) GetDataWriter(ctx context.Context, id string) (io.WriteCloser, error) {
	return m.router(ctx).GetDataWriter(ctx, id)
}

func (m *modeMux) DeleteData(ctx context.Context, id string) error {
	return m.router(ctx).DeleteData(ctx, id)
}

func (m *modeMux) Close() error { return nil }

func (m *modeMux) stats(ctx context.Context, id string) (int64, error) {
	st, err := m.router(tenant.WithTenant(ctx, id)).Stats(ctx, id)
	return st.Messages, err
}

// strayChunks counts the tenant's chunk rows that belong to no message's
// current version: pieces of a failed or replaced large write. With one
// writer per message there must be none.
func (m *modeMux) strayChunks(ctx context.Context, id string) (int64, error) {
	r := m.router(tenant.WithTenant(ctx, id))
	p, err := r.Locate(id)
	if err != nil {
		return 0, err
	}
	inner, outer, args := "", "", []any{}
	if p.Partition != "" {
		col := pgx.Identifier{schema.TenantColumn}.Sanitize()
		inner = " AND m." + col + " = c." + col
		outer = " AND c." + col + " = $1"
		args = append(args, p.Partition)
	}
	var n int64
	err = m.pool.QueryRow(ctx, "SELECT count(*) FROM "+p.Chunks.Sanitize()+" c"+
		" WHERE NOT EXISTS (SELECT 1 FROM "+p.Table.Sanitize()+" m"+
		" WHERE m.message_id = c.message_id AND m.chunked_version = c.version"+inner+")"+outer, args...).Scan(&n)
	return n, err
}

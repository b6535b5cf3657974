package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/pgtenant/pgtenant/backend"
	"github.com/pgtenant/pgtenant/integration/conformance"
	"github.com/pgtenant/pgtenant/internal/engine"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
	datastorage "schneider.vip/retryspool/storage/data"
)

const chunk = engine.DefaultChunkSize

// bodyReader streams size pseudo-random bytes determined by seed, so large
// bodies can be written and checked without holding them in memory.
func bodyReader(seed uint64, size int64) io.Reader {
	return io.LimitReader(&prng{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}, size)
}

// prng yields the same byte stream whatever the sizes of the reads.
type prng struct {
	r    *rand.Rand
	w    [8]byte
	left []byte
}

func (p *prng) Read(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		if len(p.left) == 0 {
			binary.LittleEndian.PutUint64(p.w[:], p.r.Uint64())
			p.left = p.w[:]
		}
		k := copy(b[n:], p.left)
		p.left = p.left[k:]
		n += k
	}
	return n, nil
}

// oddWriter writes through w in pieces of varying odd sizes.
func oddCopy(w io.Writer, r io.Reader) error {
	sizes := []int{1, 7, 4093, 65537, 1 << 20, 3}
	buf := make([]byte, 1<<20+1)
	for i := 0; ; i++ {
		n, err := io.ReadFull(r, buf[:sizes[i%len(sizes)]])
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// mustMatch reads id and compares it with the body of seed and size.
func mustMatch(t *testing.T, b datastorage.Backend, ctx context.Context, id string, seed uint64, size int64) {
	t.Helper()
	r, err := b.GetDataReader(ctx, id)
	if err != nil {
		t.Fatalf("reading %s: %v", id, err)
	}
	defer r.Close()
	want := bodyReader(seed, size)
	got, wbuf := make([]byte, 1<<20), make([]byte, 1<<20)
	var total int64
	for {
		n, err := io.ReadFull(r, got)
		if n > 0 {
			if _, werr := io.ReadFull(want, wbuf[:n]); werr != nil {
				t.Fatalf("%s: body longer than %d bytes", id, size)
			}
			if !bytes.Equal(got[:n], wbuf[:n]) {
				t.Fatalf("%s: bytes differ in [%d, %d)", id, total, total+int64(n))
			}
			total += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v after %d bytes", id, err, total)
		}
	}
	if total != size {
		t.Fatalf("%s: read %d bytes, want %d", id, total, size)
	}
}

type streamCase struct {
	name string
	b    datastorage.Backend
	ctx  context.Context
}

func streamBackends(t *testing.T, maxSize int64) []streamCase {
	t.Helper()
	bb := setupBackend(t)
	plain := newBackend(t, backend.NewFactory(bb.dsn).WithPool(bb.pool).WithTableName("stream").WithMaxMessageSize(maxSize))
	cases := []streamCase{{"backend", plain, context.Background()}}
	for _, mode := range modes {
		r := newHost(t, tenant.NewFactory(bb.dsn).WithPool(bb.pool).WithIsolation(mode).WithMaxMessageSize(maxSize))
		cases = append(cases, streamCase{mode.String(), r, tenant.WithTenant(context.Background(), "streamer")})
	}
	return cases
}

func TestStreamingRoundTrips(t *testing.T) {
	t.Parallel()
	sizes := []int64{0, 1, chunk - 1, chunk, chunk + 1, 3*chunk + 5, 8 << 20}
	for i, c := range streamBackends(t, backend.DefaultMaxMessageSize) {
		t.Run(c.name, func(t *testing.T) {
			for _, size := range sizes {
				seed := uint64(size) + uint64(i)
				id := fmt.Sprintf("s-%d", size)
				n, err := c.b.StoreData(c.ctx, id, bodyReader(seed, size))
				if err != nil || n != size {
					t.Fatalf("StoreData(%d bytes) = %d, %v", size, n, err)
				}
				mustMatch(t, c.b, c.ctx, id, seed, size)

				w, err := c.b.GetDataWriter(c.ctx, "w-"+id)
				if err != nil {
					t.Fatal(err)
				}
				if err := oddCopy(w, bodyReader(seed+1, size)); err != nil {
					t.Fatal(err)
				}
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				mustMatch(t, c.b, c.ctx, "w-"+id, seed+1, size)
			}
		})
	}
}

func TestStreaming256MiB(t *testing.T) {
	if testing.Short() {
		t.Skip("256 MiB round trips skipped in -short mode")
	}
	t.Parallel()
	const size = 256 << 20
	cases := streamBackends(t, backend.DefaultMaxMessageSize)
	for _, c := range []streamCase{cases[0], cases[3]} { // backend and shared-table router
		n, err := c.b.StoreData(c.ctx, "huge", bodyReader(256, size))
		if err != nil || n != size {
			t.Fatalf("%s: StoreData = %d, %v", c.name, n, err)
		}
		mustMatch(t, c.b, c.ctx, "huge", 256, size)
		w, err := c.b.GetDataWriter(c.ctx, "huge-w")
		if err != nil {
			t.Fatal(err)
		}
		if err := oddCopy(w, bodyReader(257, size)); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		mustMatch(t, c.b, c.ctx, "huge-w", 257, size)
		if err := c.b.DeleteData(c.ctx, "huge"); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStreamingCancelledWriteKeepsOld(t *testing.T) {
	t.Parallel()
	bb := setupBackend(t)
	b := newBackend(t, backend.NewFactory(bb.dsn).WithPool(bb.pool).WithTableName("cancel"))
	bg := context.Background()
	const old = 2*chunk + 3
	if _, err := b.StoreData(bg, "m", bodyReader(1, old)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	w, err := b.GetDataWriter(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, bodyReader(2, 32<<20)); err != nil {
		t.Fatal(err)
	}
	cancel()
	_, werr := io.Copy(w, bodyReader(3, 32<<20))
	cerr := w.Close()
	if werr == nil || !errors.Is(cerr, context.Canceled) {
		t.Fatalf("after cancel: Write = %v, Close = %v; want errors, Close context.Canceled", werr, cerr)
	}
	mustMatch(t, b, bg, "m", 1, old)
	var pieces, versions int
	if err := bb.pool.QueryRow(bg, `SELECT count(*), count(DISTINCT version) FROM public.c_cancel WHERE message_id = 'm'`).
		Scan(&pieces, &versions); err != nil {
		t.Fatal(err)
	}
	if pieces != 3 || versions != 1 {
		t.Fatalf("chunk rows after the cancelled write: %d rows in %d versions, want 3 in 1", pieces, versions)
	}
	if got := bb.pool.Stat().AcquiredConns(); got != 0 {
		t.Fatalf("%d connections still acquired", got)
	}
}

func TestStreamingMaxSize(t *testing.T) {
	t.Parallel()
	const max = 2*chunk + 10
	for _, c := range streamBackends(t, max) {
		t.Run(c.name, func(t *testing.T) {
			conformance.MustStore(t, c.b, c.ctx, "m", []byte("old"))
			if _, err := c.b.StoreData(c.ctx, "m", bodyReader(1, max+1)); !errors.Is(err, backend.ErrTooLarge) {
				t.Fatalf("StoreData(max+1) = %v, want ErrTooLarge", err)
			}
			conformance.MustRead(t, c.b, c.ctx, "m", []byte("old"))
			w, err := c.b.GetDataWriter(c.ctx, "n")
			if err != nil {
				t.Fatal(err)
			}
			_, werr := io.Copy(w, bodyReader(1, max+1))
			if cerr := w.Close(); !errors.Is(werr, backend.ErrTooLarge) || !errors.Is(cerr, backend.ErrTooLarge) {
				t.Fatalf("writer over max: Write %v, Close %v", werr, cerr)
			}
			conformance.MustNotFind(t, c.b, c.ctx, "n")
			if n, err := c.b.StoreData(c.ctx, "m", bodyReader(2, max)); err != nil || n != max {
				t.Fatalf("StoreData(max) = %d, %v", n, err)
			}
			mustMatch(t, c.b, c.ctx, "m", 2, max)
		})
	}
}

func TestStreamingReadersReleaseConnections(t *testing.T) {
	t.Parallel()
	bb := setupBackend(t)
	b := newBackend(t, backend.NewFactory(bb.dsn).WithPool(bb.pool).WithTableName("readers"))
	ctx := context.Background()
	if _, err := b.StoreData(ctx, "big", bodyReader(1, 2*chunk+1)); err != nil {
		t.Fatal(err)
	}
	conformance.MustStore(t, b, ctx, "small", []byte("x"))
	for i := range 1000 {
		id := "big"
		if i%2 == 1 {
			id = "small"
		}
		r, err := b.GetDataReader(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			if _, err := r.Read(make([]byte, 100)); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if got := bb.pool.Stat().AcquiredConns(); got != 0 {
		t.Fatalf("%d connections still acquired after 1000 closed readers", got)
	}
}

// TestStreamingMemoryBounded stores and reads back a 64 MiB body through
// the plain backend and through a router, and bounds the peak growth of
// the Go heap over each round trip far below the body's size: a change that
// buffers whole bodies fails it. It runs alone (not in parallel), with the
// collector set to keep little garbage, so the heap is this test's.
func TestStreamingMemoryBounded(t *testing.T) {
	const size, bound = 64 << 20, 24 << 20
	old := debug.SetGCPercent(10)
	defer debug.SetGCPercent(old)
	cases := streamBackends(t, backend.DefaultMaxMessageSize)
	for _, c := range []streamCase{cases[0], cases[1]} { // backend and schema-per-tenant router
		runtime.GC()
		base := heapInUse()
		h := startHeapSampler()
		if n, err := c.b.StoreData(c.ctx, "big", bodyReader(64, size)); err != nil || n != size {
			t.Fatalf("%s: StoreData = %d, %v", c.name, n, err)
		}
		w, err := c.b.GetDataWriter(c.ctx, "big-w")
		if err != nil {
			t.Fatal(err)
		}
		if err := oddCopy(w, bodyReader(65, size)); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		mustMatch(t, c.b, c.ctx, "big", 64, size)
		peak := h.Stop()
		growth := int64(peak) - int64(base)
		t.Logf("%s: peak heap growth %.1f MiB over a %d MiB round trip", c.name, float64(growth)/(1<<20), size>>20)
		if growth > bound {
			t.Errorf("%s: the heap grew by %.1f MiB, more than %d MiB, for a %d MiB body", c.name, float64(growth)/(1<<20), bound>>20, size>>20)
		}
	}
}

// TestInlineBodiesLeaveChunkTableAlone checks both sides of the inline
// fast path. Replacing a chunked body with an inline one, and deleting a
// chunked body, remove its pieces. And while another session holds the
// chunk table in ACCESS EXCLUSIVE mode, inline bodies are still stored,
// replaced, read and deleted (they never open that table), whereas the
// delete of a chunked body waits for the lock (the control).
func TestInlineBodiesLeaveChunkTableAlone(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		r := rb.router(t)
		bg := context.Background()
		ctx := tenant.WithTenant(bg, "acme")
		for _, id := range []string{"replaced", "deleted", "chunked"} {
			if _, err := r.StoreData(ctx, id, bodyReader(1, 2*chunk+1)); err != nil {
				t.Fatal(err)
			}
		}
		loc, err := r.Locate("acme")
		if err != nil {
			t.Fatal(err)
		}
		pieces := func(id string) int {
			return rb.count(t, "SELECT count(*) FROM "+loc.Chunks.Sanitize()+" WHERE message_id = $1", id)
		}
		if n := pieces("replaced"); n != 3 {
			t.Fatalf("a body of two chunks and a byte has %d pieces, want 3", n)
		}
		conformance.MustStore(t, r, ctx, "replaced", []byte("inline now"))
		conformance.MustRead(t, r, ctx, "replaced", []byte("inline now"))
		if err := r.DeleteData(ctx, "deleted"); err != nil {
			t.Fatal(err)
		}
		if a, b := pieces("replaced"), pieces("deleted"); a != 0 || b != 0 {
			t.Fatalf("pieces left: %d of the body replaced inline, %d of the deleted one", a, b)
		}

		tx, err := rb.pool.Begin(bg)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(bg)
		if _, err := tx.Exec(bg, "LOCK TABLE "+loc.Chunks.Sanitize()+" IN ACCESS EXCLUSIVE MODE"); err != nil {
			t.Fatal(err)
		}
		inline, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		conformance.MustStore(t, r, inline, "small", []byte("one"))
		conformance.MustStore(t, r, inline, "small", []byte("two"))
		conformance.MustRead(t, r, inline, "small", []byte("two"))
		if err := r.DeleteData(inline, "small"); err != nil {
			t.Fatalf("deleting an inline body while the chunk table is locked: %v", err)
		}
		blocked, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		if err := r.DeleteData(blocked, "chunked"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("deleting a chunked body while the chunk table is locked = %v; want it to wait", err)
		}
	})
}

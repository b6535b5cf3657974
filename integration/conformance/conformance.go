package conformance

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pgtenant/pgtenant/backend"
	datastorage "schneider.vip/retryspool/storage/data"
)

// Setup returns a fresh Backend for one test, and the context its calls
// must carry (a router needs a tenant in it). The backend must start empty.
type Setup func(t *testing.T) (datastorage.Backend, context.Context)

// Exercise runs the suite; each case gets its own Backend from setup and
// runs in parallel with the others.
func Exercise(t *testing.T, setup Setup) {
	t.Helper()
	exercise(t, setup, []testCase[datastorage.Backend]{
		{"RoundTrip", testRoundTrip},
		{"UpsertReplaces", testUpsert},
		{"WriterChunks", testWriterChunks},
		{"EmptyViaStoreData", testEmptyStore},
		{"EmptyViaWriter", testEmptyWriter},
		{"Payload100KiB", func(t *testing.T, b datastorage.Backend, ctx context.Context) { testPayload(t, b, ctx, 100<<10) }},
		{"Payload8MiB", func(t *testing.T, b datastorage.Backend, ctx context.Context) { testPayload(t, b, ctx, 8<<20) }},
		{"NotFound", testNotFound},
		{"DeleteRemoves", testDelete},
		{"InvalidMessageIDs", testInvalidIDs},
		{"CancelledContextKeepsOld", testCancelled},
		{"ConcurrentWritersOneVersion", testConcurrentWriters},
		{"ConcurrentLargeWriters", testConcurrentLargeWriters},
		{"WriterCloseOnce", testWriterCloseOnce},
		{"ReaderClose", testReaderClose},
		{"CloseIdempotent", testCloseIdempotent},
	})
}

// testCase is one case of a suite on backends of type B.
type testCase[B io.Closer] struct {
	name string
	run  func(t *testing.T, b B, ctx context.Context)
}

// exercise runs cases in parallel, each on a backend of its own from
// setup, closed when the case ends.
func exercise[B io.Closer](t *testing.T, setup func(t *testing.T) (B, context.Context), cases []testCase[B]) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b, ctx := setup(t)
			t.Cleanup(func() { _ = b.Close() })
			c.run(t, b, ctx)
		})
	}
}

// MustOpen calls open (a Factory's Open, OpenAdmin, Meta().Open...) and
// fails the test on error; what it opened is closed when the test ends.
func MustOpen[T io.Closer](t testing.TB, open func(context.Context) (T, error)) T {
	t.Helper()
	v, err := open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v
}

// Random returns n random bytes.
func Random(t testing.TB, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	if _, err := rand.Read(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// MustStore stores data under id and checks the size returned.
func MustStore(t testing.TB, b datastorage.Backend, ctx context.Context, id string, data []byte) {
	t.Helper()
	n, err := b.StoreData(ctx, id, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("StoreData(%q, %d bytes): %v", id, len(data), err)
	}
	if n != int64(len(data)) {
		t.Fatalf("StoreData(%q) returned size %d, want %d", id, n, len(data))
	}
}

// Read returns the body stored under id.
func Read(t testing.TB, b datastorage.Backend, ctx context.Context, id string) ([]byte, error) {
	t.Helper()
	r, err := b.GetDataReader(ctx, id)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// MustRead returns the body stored under id and checks it equals want.
func MustRead(t testing.TB, b datastorage.Backend, ctx context.Context, id string, want []byte) {
	t.Helper()
	got, err := Read(t, b, ctx, id)
	if err != nil {
		t.Fatalf("reading %q: %v", id, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("reading %q: got %d bytes %s, want %d bytes %s", id, len(got), preview(got), len(want), preview(want))
	}
}

// MustNotFind checks that reading id answers ErrDataNotFound.
func MustNotFind(t testing.TB, b datastorage.Backend, ctx context.Context, id string) {
	t.Helper()
	got, err := Read(t, b, ctx, id)
	if !errors.Is(err, datastorage.ErrDataNotFound) {
		t.Fatalf("reading %q: got %d bytes, err %v; want ErrDataNotFound", id, len(got), err)
	}
}

func preview(p []byte) string {
	if len(p) > 16 {
		return fmt.Sprintf("%q...", p[:16])
	}
	return fmt.Sprintf("%q", p)
}

func testRoundTrip(t *testing.T, b datastorage.Backend, ctx context.Context) {
	for _, size := range []int{1, 5, 1000, 4096} {
		id := fmt.Sprintf("msg-%d", size)
		data := Random(t, size)
		MustStore(t, b, ctx, id, data)
		MustRead(t, b, ctx, id, data)
	}
}

func testUpsert(t *testing.T, b datastorage.Backend, ctx context.Context) {
	MustStore(t, b, ctx, "m", []byte("version one, longer"))
	MustStore(t, b, ctx, "m", []byte("v2"))
	MustRead(t, b, ctx, "m", []byte("v2"))
}

func testWriterChunks(t *testing.T, b datastorage.Backend, ctx context.Context) {
	data := Random(t, 100_003)
	w, err := b.GetDataWriter(ctx, "w")
	if err != nil {
		t.Fatal(err)
	}
	for i, size := 0, 1; i < len(data); size = size*3 + 1 {
		end := min(i+size, len(data))
		n, err := w.Write(data[i:end])
		if err != nil || n != end-i {
			t.Fatalf("Write: n=%d err=%v", n, err)
		}
		i = end
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	MustRead(t, b, ctx, "w", data)
}

func testEmptyStore(t *testing.T, b datastorage.Backend, ctx context.Context) {
	MustStore(t, b, ctx, "empty", nil)
	MustRead(t, b, ctx, "empty", []byte{})
	n, err := b.StoreData(ctx, "empty-reader", strings.NewReader(""))
	if err != nil || n != 0 {
		t.Fatalf("StoreData(empty reader) = %d, %v", n, err)
	}
	MustRead(t, b, ctx, "empty-reader", []byte{})
}

func testEmptyWriter(t *testing.T, b datastorage.Backend, ctx context.Context) {
	w, err := b.GetDataWriter(ctx, "empty")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	MustRead(t, b, ctx, "empty", []byte{})
}

func testPayload(t *testing.T, b datastorage.Backend, ctx context.Context, size int) {
	data := Random(t, size)
	MustStore(t, b, ctx, "big", data)
	MustRead(t, b, ctx, "big", data)
	w, err := b.GetDataWriter(ctx, "big-writer")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	MustRead(t, b, ctx, "big-writer", data)
}

func testNotFound(t *testing.T, b datastorage.Backend, ctx context.Context) {
	MustNotFind(t, b, ctx, "missing")
	if err := b.DeleteData(ctx, "missing"); !errors.Is(err, datastorage.ErrDataNotFound) {
		t.Fatalf("DeleteData(missing) = %v, want ErrDataNotFound", err)
	}
}

func testDelete(t *testing.T, b datastorage.Backend, ctx context.Context) {
	MustStore(t, b, ctx, "d", []byte("bye"))
	MustStore(t, b, ctx, "keep", []byte("stay"))
	if err := b.DeleteData(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	MustNotFind(t, b, ctx, "d")
	MustRead(t, b, ctx, "keep", []byte("stay"))
	if err := b.DeleteData(ctx, "d"); !errors.Is(err, datastorage.ErrDataNotFound) {
		t.Fatalf("second DeleteData = %v, want ErrDataNotFound", err)
	}
}

// InvalidMessageIDs are ids every backend must refuse.
var InvalidMessageIDs = map[string]string{
	"empty":   "",
	"256B":    strings.Repeat("x", 256),
	"NUL":     "a\x00b",
	"badUTF8": "a\xffb",
}

func testInvalidIDs(t *testing.T, b datastorage.Backend, ctx context.Context) {
	MustStore(t, b, ctx, strings.Repeat("x", 255), []byte("255 bytes is fine"))
	MustStore(t, b, ctx, strings.Repeat("é", 127), []byte("254 bytes of UTF-8 is fine"))
	for name, id := range InvalidMessageIDs {
		check := func(op string, err error) {
			t.Helper()
			if !errors.Is(err, backend.ErrInvalidMessageID) {
				t.Errorf("%s(%s id) = %v, want ErrInvalidMessageID", op, name, err)
			}
		}
		_, err := b.StoreData(ctx, id, strings.NewReader("x"))
		check("StoreData", err)
		_, err = b.GetDataReader(ctx, id)
		check("GetDataReader", err)
		_, err = b.GetDataWriter(ctx, id)
		check("GetDataWriter", err)
		check("DeleteData", b.DeleteData(ctx, id))
	}
}

func testCancelled(t *testing.T, b datastorage.Backend, ctx context.Context) {
	old := []byte("the old version")
	MustStore(t, b, ctx, "c", old)

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.StoreData(cctx, "c", strings.NewReader("new")); !errors.Is(err, context.Canceled) {
		t.Errorf("StoreData with cancelled context = %v, want context.Canceled", err)
	}
	MustRead(t, b, ctx, "c", old)

	wctx, wcancel := context.WithCancel(ctx)
	w, err := b.GetDataWriter(wctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("half of a new")); err != nil {
		t.Fatal(err)
	}
	wcancel()
	if err := w.Close(); !errors.Is(err, context.Canceled) {
		t.Errorf("writer Close after cancel = %v, want context.Canceled", err)
	}
	MustRead(t, b, ctx, "c", old)

	if _, err := b.StoreData(cctx, "never", strings.NewReader("x")); err == nil {
		t.Error("StoreData with cancelled context succeeded")
	}
	MustNotFind(t, b, ctx, "never")
}

func testConcurrentWriters(t *testing.T, b datastorage.Backend, ctx context.Context) {
	const writers = 8
	versions := make([][]byte, writers)
	for i := range versions {
		versions[i] = bytes.Repeat([]byte{byte('a' + i)}, 64<<10+i)
	}
	ids := make([]string, writers)
	for i := range ids {
		ids[i] = "same"
	}
	writeAll(t, b, ctx, ids, versions)
	got, err := Read(t, b, ctx, "same")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range versions {
		if bytes.Equal(got, v) {
			return
		}
	}
	t.Fatalf("final body (%d bytes, %s) is none of the versions written", len(got), preview(got))
}

// writeAll writes versions[i] under ids[i], all at once, every other one
// through StoreData and the rest through the streaming writer, and fails t
// if any write failed.
func writeAll(t *testing.T, b datastorage.Backend, ctx context.Context, ids []string, versions [][]byte) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(versions))
	for i, v := range versions {
		wg.Go(func() {
			if i%2 == 0 {
				_, err := b.StoreData(ctx, ids[i], bytes.NewReader(v))
				errs <- err
				return
			}
			w, err := b.GetDataWriter(ctx, ids[i])
			if err == nil {
				_, err = io.Copy(w, bytes.NewReader(v))
				err = errors.Join(err, w.Close())
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// testConcurrentLargeWriters writes chunked bodies (over 1 MiB) from
// several goroutines at once: four to one message, through StoreData and
// the streaming writer, and four to messages of their own. The shared
// message ends as exactly one of the versions, and every other message as
// its own.
func testConcurrentLargeWriters(t *testing.T, b datastorage.Backend, ctx context.Context) {
	const size = 3<<20 + 17
	versions := make([][]byte, 8)
	for i := range versions {
		versions[i] = bytes.Repeat([]byte{byte('A' + i)}, size+i)
	}
	ids := make([]string, len(versions))
	for i := range ids {
		ids[i] = "large-same"
		if i >= 4 {
			ids[i] = fmt.Sprintf("large-%d", i)
		}
	}
	writeAll(t, b, ctx, ids, versions)
	got, err := Read(t, b, ctx, "large-same")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(versions[:4], func(v []byte) bool { return bytes.Equal(got, v) }) {
		t.Fatalf("large-same holds %d bytes %s: none of the versions written", len(got), preview(got))
	}
	for i := 4; i < len(versions); i++ {
		MustRead(t, b, ctx, fmt.Sprintf("large-%d", i), versions[i])
	}
}

func testWriterCloseOnce(t *testing.T, b datastorage.Backend, ctx context.Context) {
	w, err := b.GetDataWriter(ctx, "once")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("more")); err == nil {
		t.Error("Write after Close succeeded")
	}
	MustStore(t, b, ctx, "once", []byte("second"))
	if err := w.Close(); err != nil {
		t.Errorf("second Close = %v, want nil (the first Close's result)", err)
	}
	MustRead(t, b, ctx, "once", []byte("second")) // the second Close wrote nothing
}

func testReaderClose(t *testing.T, b datastorage.Backend, ctx context.Context) {
	MustStore(t, b, ctx, "r", []byte("body"))
	r, err := b.GetDataReader(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second reader Close = %v", err)
	}
	if _, err := r.Read(make([]byte, 4)); err == nil {
		t.Error("Read after Close succeeded")
	}
}

func testCloseIdempotent(t *testing.T, b datastorage.Backend, ctx context.Context) {
	MustStore(t, b, ctx, "x", []byte("y"))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if _, err := b.StoreData(ctx, "x", strings.NewReader("z")); err == nil {
		t.Error("StoreData after Close succeeded")
	}
}

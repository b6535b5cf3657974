package engine

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/internal/ddl"
	"github.com/pgtenant/pgtenant/internal/testdb"
	"github.com/pgtenant/pgtenant/schema"
)

// body is a reproducible body of size bytes.
func body(seed uint64, size int) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// stores returns Stores on a table of their own and on a tenant's rows of
// a shared table, with small chunks so that bodies of a few KiB are
// streamed.
func stores(t *testing.T) map[string]*Store {
	t.Helper()
	pool := testdb.Pool(t, testdb.New(t), nil)
	ctx := context.Background()
	own := schema.Table{Schema: "public", Name: "own"}
	if err := ddl.EnsureTable(ctx, pool, own); err != nil {
		t.Fatal(err)
	}
	shared := schema.Table{Schema: "public", Name: "shared"}
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		return ddl.Run(ctx, tx, ddl.Step{SQL: ddl.Table(shared, true)})
	}); err != nil {
		t.Fatal(err)
	}
	out := map[string]*Store{}
	for name, target := range map[string]Target{"own": {Table: own}, "shared": {Table: shared, Partition: "acme"}} {
		s, err := NewStore(pool, target, Options{ChunkSize: 1 << 10})
		if err != nil {
			t.Fatal(err)
		}
		out[name] = s
	}
	return out
}

// TestReaderSeesOneVersion replaces a chunked message at the moment that
// matters, between the reader's read of the message row and its scan of
// the pieces: the reader still returns the version it started with.
func TestReaderSeesOneVersion(t *testing.T) {
	t.Parallel()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			const size = 3<<10 + 11
			if err := s.Put(ctx, "v", nil); err != nil {
				t.Fatal(err)
			}
			if _, err := s.StoreFrom(ctx, "v", bytes.NewReader(body(1, size))); err != nil {
				t.Fatal(err)
			}
			replaced := 0
			hooked := withScanHooks(ctx, func() {
				replaced++
				if replaced == 1 { // a larger body replaces it, committed now
					if _, err := s.StoreFrom(ctx, "v", bytes.NewReader(body(2, size+1<<10))); err != nil {
						t.Error(err)
					}
				}
			}, nil)
			r, err := s.Reader(hooked, "v")
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatalf("reading the version the reader started with: %v", err)
			}
			if replaced != 1 {
				t.Fatalf("the hook ran %d times, want once", replaced)
			}
			if !bytes.Equal(got, body(1, size)) {
				t.Fatal("an open reader returned bytes of another version")
			}
			if now, err := s.Get(ctx, "v"); err != nil || !bytes.Equal(now, body(2, size+1<<10)) {
				t.Fatalf("the replacement reads back wrong: %v", err)
			}
		})
	}
}

// TestReaderContextEndsBeforeItIsWatched ends a chunked reader's context
// between its chunk scan and the moment it starts watching the context:
// the read fails with the context's error, and nothing races (-race).
func TestReaderContextEndsBeforeItIsWatched(t *testing.T) {
	t.Parallel()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			bg := context.Background()
			if _, err := s.StoreFrom(bg, "big", bytes.NewReader(body(1, 2<<10+1))); err != nil {
				t.Fatal(err)
			}
			for range 20 {
				ctx, cancel := context.WithCancel(bg)
				r, err := s.Reader(withScanHooks(ctx, nil, cancel), "big")
				if err != nil {
					t.Fatal(err)
				}
				_, err = io.Copy(io.Discard, r)
				_ = r.Close()
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("read with its context ended = %v, want context.Canceled", err)
				}
			}
		})
	}
}

package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"testing"
	"time"

	datastorage "schneider.vip/retryspool/storage/data"
	metastorage "schneider.vip/retryspool/storage/meta"
)

// MetaSetup returns a fresh, empty metadata backend for one test and the
// context its calls must carry.
type MetaSetup func(t *testing.T) (metastorage.Backend, context.Context)

// ExerciseMeta runs the metadata suite: the behaviour of
// schneider.vip/retryspool/storage/meta's interface and of RetrySpool's
// filesystem backend, which every pgtenant metadata backend shares. Each
// case gets its own backend from setup and runs in parallel.
func ExerciseMeta(t *testing.T, setup MetaSetup) {
	t.Helper()
	exercise(t, setup, []testCase[metastorage.Backend]{
		{"RoundTrip", testMetaRoundTrip},
		{"CreatedDefaultsToNow", testMetaCreatedDefault},
		{"HeadersNilAndEmpty", testMetaHeaders},
		{"StoreReplaces", testMetaStoreReplaces},
		{"NotFound", testMetaNotFound},
		{"UpdateKeepsCreated", testMetaUpdate},
		{"Delete", testMetaDelete},
		{"MoveIsCompareAndSwap", testMetaMove},
		{"List", testMetaList},
		{"Iterate", testMetaIterate},
		{"IterateWhileMoving", testMetaIterateWhileMoving},
		{"Closed", testMetaClosed},
	})
}

// sameTime compares times at PostgreSQL's precision (microseconds).
func sameTime(a, b time.Time) bool {
	return a.Truncate(time.Microsecond).Equal(b.Truncate(time.Microsecond))
}

// Meta returns a metadata with every field set, different per n.
func Meta(n int, state metastorage.QueueState) metastorage.MessageMetadata {
	base := time.Date(2026, 1, 2, 3, 4, 5, 678901000, time.UTC)
	return metastorage.MessageMetadata{
		ID: fmt.Sprintf("meta-%d", n), State: state, Attempts: n % 5, MaxAttempts: 10, NextRetry: base.Add(time.Duration(n) * time.Hour),
		Created: base.Add(time.Duration(n) * time.Minute), LastError: fmt.Sprintf("error %d", n), Size: int64(100 * n),
		Priority: n % 3, Headers: map[string]string{"to": fmt.Sprintf("user%d@example.com", n), "n": fmt.Sprint(n)},
		RetryPolicyName: "policy",
	}
}

// MustStoreMeta stores md under id.
func MustStoreMeta(t testing.TB, b metastorage.Backend, ctx context.Context, id string, md metastorage.MessageMetadata) {
	t.Helper()
	if err := b.StoreMeta(ctx, id, md); err != nil {
		t.Fatalf("StoreMeta(%q): %v", id, err)
	}
}

// checkMeta compares what GetMeta returned with what was stored: every
// field, Updated aside (the backend sets it).
func checkMeta(t testing.TB, got, want metastorage.MessageMetadata) {
	t.Helper()
	if got.ID != want.ID || got.State != want.State || got.Attempts != want.Attempts || got.MaxAttempts != want.MaxAttempts ||
		!sameTime(got.NextRetry, want.NextRetry) || !sameTime(got.Created, want.Created) || got.LastError != want.LastError ||
		got.Size != want.Size || got.Priority != want.Priority || !maps.Equal(got.Headers, want.Headers) ||
		(got.Headers == nil) != (want.Headers == nil) || got.RetryPolicyName != want.RetryPolicyName {
		t.Fatalf("metadata:\n got %+v\nwant %+v", got, want)
	}
}

func testMetaRoundTrip(t *testing.T, b metastorage.Backend, ctx context.Context) {
	for i, state := range []metastorage.QueueState{metastorage.StateIncoming, metastorage.StateDeferred, metastorage.StateBounce} {
		want := Meta(i+1, state)
		before := time.Now().Add(-time.Second)
		MustStoreMeta(t, b, ctx, fmt.Sprint("m", i), want)
		got, err := b.GetMeta(ctx, fmt.Sprint("m", i))
		if err != nil {
			t.Fatal(err)
		}
		checkMeta(t, got, want)
		if got.Updated.Before(before) || got.Updated.After(time.Now().Add(time.Minute)) {
			t.Fatalf("Updated %v is not now", got.Updated)
		}
	}
	zero := metastorage.MessageMetadata{ID: "zero", Created: time.Date(2026, 5, 5, 0, 0, 0, 0, time.UTC)}
	MustStoreMeta(t, b, ctx, "zero", zero)
	got, err := b.GetMeta(ctx, "zero")
	if err != nil {
		t.Fatal(err)
	}
	if !got.NextRetry.IsZero() || got.State != metastorage.StateIncoming || got.Headers != nil || got.LastError != "" {
		t.Fatalf("zero values came back as %+v", got)
	}
}

func testMetaCreatedDefault(t *testing.T, b metastorage.Backend, ctx context.Context) {
	md := Meta(1, metastorage.StateIncoming)
	md.Created = time.Time{}
	before := time.Now().Add(-time.Second)
	MustStoreMeta(t, b, ctx, "m", md)
	got, err := b.GetMeta(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	if got.Created.Before(before) || !sameTime(got.Created, got.Updated) {
		t.Fatalf("zero Created became %v (Updated %v), want now", got.Created, got.Updated)
	}
}

func testMetaHeaders(t *testing.T, b metastorage.Backend, ctx context.Context) {
	for id, h := range map[string]map[string]string{"nil": nil, "empty": {}, "full": {"a": "1", "b": "ü \" \\ \n"}} {
		md := Meta(1, metastorage.StateIncoming)
		md.Headers = h
		MustStoreMeta(t, b, ctx, id, md)
		got, err := b.GetMeta(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if (got.Headers == nil) != (h == nil) || !maps.Equal(got.Headers, h) {
			t.Fatalf("%s headers came back as %#v", id, got.Headers)
		}
	}
}

func testMetaStoreReplaces(t *testing.T, b metastorage.Backend, ctx context.Context) {
	MustStoreMeta(t, b, ctx, "m", Meta(1, metastorage.StateIncoming))
	second := Meta(2, metastorage.StateDeferred)
	MustStoreMeta(t, b, ctx, "m", second)
	got, err := b.GetMeta(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	checkMeta(t, got, second)
}

func testMetaNotFound(t *testing.T, b metastorage.Backend, ctx context.Context) {
	want := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, metastorage.ErrMessageNotFound) {
			t.Errorf("%s of a missing message = %v, want ErrMessageNotFound", op, err)
		}
	}
	_, err := b.GetMeta(ctx, "missing")
	want("GetMeta", err)
	want("UpdateMeta", b.UpdateMeta(ctx, "missing", Meta(1, metastorage.StateIncoming)))
	want("DeleteMeta", b.DeleteMeta(ctx, "missing"))
	want("MoveToState", b.MoveToState(ctx, "missing", metastorage.StateIncoming, metastorage.StateActive))
}

func testMetaUpdate(t *testing.T, b metastorage.Backend, ctx context.Context) {
	first := Meta(1, metastorage.StateActive)
	MustStoreMeta(t, b, ctx, "m", first)
	stored, err := b.GetMeta(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	next := Meta(7, metastorage.StateDeferred)
	next.Created = time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC) // ignored: Update keeps created
	if err := b.UpdateMeta(ctx, "m", next); err != nil {
		t.Fatal(err)
	}
	got, err := b.GetMeta(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	next.Created = first.Created
	checkMeta(t, got, next)
	if got.Updated.Before(stored.Updated) {
		t.Fatalf("Updated went back: %v after %v", got.Updated, stored.Updated)
	}
}

func testMetaDelete(t *testing.T, b metastorage.Backend, ctx context.Context) {
	MustStoreMeta(t, b, ctx, "gone", Meta(1, metastorage.StateIncoming))
	MustStoreMeta(t, b, ctx, "kept", Meta(2, metastorage.StateIncoming))
	if err := b.DeleteMeta(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetMeta(ctx, "gone"); !errors.Is(err, metastorage.ErrMessageNotFound) {
		t.Fatalf("GetMeta after DeleteMeta = %v", err)
	}
	if err := b.DeleteMeta(ctx, "gone"); !errors.Is(err, metastorage.ErrMessageNotFound) {
		t.Fatalf("second DeleteMeta = %v", err)
	}
	if _, err := b.GetMeta(ctx, "kept"); err != nil {
		t.Fatal(err)
	}
}

func testMetaMove(t *testing.T, b metastorage.Backend, ctx context.Context) {
	MustStoreMeta(t, b, ctx, "m", Meta(1, metastorage.StateIncoming))
	before, _ := b.GetMeta(ctx, "m")
	if err := b.MoveToState(ctx, "m", metastorage.StateIncoming, metastorage.StateActive); err != nil {
		t.Fatal(err)
	}
	if err := b.MoveToState(ctx, "m", metastorage.StateIncoming, metastorage.StateActive); !errors.Is(err, metastorage.ErrStateConflict) {
		t.Fatalf("second move from incoming = %v, want ErrStateConflict", err)
	}
	got, err := b.GetMeta(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != metastorage.StateActive || got.Updated.Before(before.Updated) || !sameTime(got.Created, before.Created) {
		t.Fatalf("after the move: %+v", got)
	}
}

func testMetaList(t *testing.T, b metastorage.Backend, ctx context.Context) {
	const n = 12
	for i := range n {
		md := Meta(i+1, metastorage.StateDeferred)
		md.Priority, md.Attempts = (i*5)%7, (i*3)%5
		MustStoreMeta(t, b, ctx, fmt.Sprintf("d%02d", i), md)
	}
	MustStoreMeta(t, b, ctx, "other", Meta(99, metastorage.StateIncoming))
	all := make([]metastorage.MessageMetadata, 0, n)
	ids := map[string]metastorage.MessageMetadata{}
	for i := range n {
		id := fmt.Sprintf("d%02d", i)
		md, err := b.GetMeta(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		md.ID = id
		all = append(all, md)
		ids[id] = md
	}
	keys := map[string]func(a, b metastorage.MessageMetadata) int{
		"created":  func(a, b metastorage.MessageMetadata) int { return a.Created.Compare(b.Created) },
		"updated":  func(a, b metastorage.MessageMetadata) int { return a.Updated.Compare(b.Updated) },
		"priority": func(a, b metastorage.MessageMetadata) int { return a.Priority - b.Priority },
		"attempts": func(a, b metastorage.MessageMetadata) int { return a.Attempts - b.Attempts },
		"bogus":    func(a, b metastorage.MessageMetadata) int { return a.Created.Compare(b.Created) },
	}
	for key, cmp := range keys {
		for _, order := range []string{"asc", "desc"} {
			want := slices.Clone(all)
			sort.SliceStable(want, func(i, j int) bool {
				c := cmp(want[i], want[j])
				if c == 0 {
					c = compareStrings(want[i].ID, want[j].ID)
				}
				if order == "desc" {
					return c > 0
				}
				return c < 0
			})
			res, err := b.ListMessages(ctx, metastorage.StateDeferred, metastorage.MessageListOptions{SortBy: key, SortOrder: order, Limit: 5, Offset: 3})
			if err != nil {
				t.Fatal(err)
			}
			var wantIDs []string
			for _, md := range want[3:8] {
				wantIDs = append(wantIDs, md.ID)
			}
			if !slices.Equal(res.MessageIDs, wantIDs) || res.Total != n || !res.HasMore {
				t.Fatalf("%s %s: got %v total %d more %v; want %v total %d more true", key, order, res.MessageIDs, res.Total, res.HasMore, wantIDs, n)
			}
		}
	}
	res, err := b.ListMessages(ctx, metastorage.StateDeferred, metastorage.MessageListOptions{Offset: 10})
	if err != nil || len(res.MessageIDs) != 2 || res.Total != n || res.HasMore {
		t.Fatalf("offset 10, no limit: %+v, %v", res, err)
	}
	res, err = b.ListMessages(ctx, metastorage.StateDeferred, metastorage.MessageListOptions{Offset: 50})
	if err != nil || len(res.MessageIDs) != 0 || res.Total != n || res.HasMore || res.MessageIDs == nil {
		t.Fatalf("offset past the end: %+v, %v", res, err)
	}
	// Since keeps messages created or updated at or after it: all were
	// updated just now; none of them was created in the future.
	res, err = b.ListMessages(ctx, metastorage.StateDeferred, metastorage.MessageListOptions{Since: time.Now().Add(time.Hour)})
	if err != nil || res.Total != 0 {
		t.Fatalf("since in an hour: %+v, %v", res, err)
	}
	res, err = b.ListMessages(ctx, metastorage.StateDeferred, metastorage.MessageListOptions{Since: time.Now().Add(-time.Hour)})
	if err != nil || res.Total != n {
		t.Fatalf("since an hour ago: %+v, %v", res, err)
	}
	res, err = b.ListMessages(ctx, metastorage.StateArchived, metastorage.MessageListOptions{})
	if err != nil || res.Total != 0 || len(res.MessageIDs) != 0 {
		t.Fatalf("an empty state: %+v, %v", res, err)
	}
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// drain reads an iterator to its end and returns the ids, checking that
// hasMore is false exactly at the last message.
func drain(t testing.TB, it metastorage.MessageIterator, ctx context.Context) []string {
	t.Helper()
	var ids []string
	for {
		md, more, err := it.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if md.ID == "" {
			if more {
				t.Fatal("an exhausted iterator says more follow")
			}
			return ids
		}
		ids = append(ids, md.ID)
		if !more {
			if md, _, err := it.Next(ctx); err != nil || md.ID != "" {
				t.Fatalf("an iterator said no more, then returned %q (%v)", md.ID, err)
			}
			return ids
		}
	}
}

func testMetaIterate(t *testing.T, b metastorage.Backend, ctx context.Context) {
	const n = 25
	var want []string
	for i := range n {
		id := fmt.Sprintf("i%02d", i)
		MustStoreMeta(t, b, ctx, id, Meta(i+1, metastorage.StateIncoming)) // created ascending with i
		want = append(want, id)
	}
	MustStoreMeta(t, b, ctx, "not-incoming", Meta(50, metastorage.StateBounce))
	for _, batch := range []int{0, 1, 3, 7, 100} {
		it, err := b.NewMessageIterator(ctx, metastorage.StateIncoming, batch)
		if err != nil {
			t.Fatal(err)
		}
		if got := drain(t, it, ctx); !slices.Equal(got, want) {
			t.Fatalf("batch %d: got %v, want %v", batch, got, want)
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
		if _, _, err := it.Next(ctx); err == nil {
			t.Fatal("Next after Close succeeded")
		}
	}
	it, err := b.NewMessageIterator(ctx, metastorage.StateArchived, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := drain(t, it, ctx); len(got) != 0 {
		t.Fatalf("an empty state gave %v", got)
	}
}

// testMetaIterateWhileMoving moves every other message out of the state
// while an iterator walks it in small batches: every message that stays
// must be returned (paging by offset would skip some).
func testMetaIterateWhileMoving(t *testing.T, b metastorage.Backend, ctx context.Context) {
	const n = 40
	for i := range n {
		MustStoreMeta(t, b, ctx, fmt.Sprintf("w%02d", i), Meta(i+1, metastorage.StateDeferred))
	}
	it, err := b.NewMessageIterator(ctx, metastorage.StateDeferred, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	seen := map[string]bool{}
	next := 1 // the next odd message to move out
	for {
		md, _, err := it.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if md.ID == "" {
			break
		}
		seen[md.ID] = true
		for next < n && seen[fmt.Sprintf("w%02d", next)] {
			next += 2
		}
		if next < n {
			if err := b.MoveToState(ctx, fmt.Sprintf("w%02d", next), metastorage.StateDeferred, metastorage.StateActive); err != nil {
				t.Fatal(err)
			}
			next += 2
		}
	}
	for i := 0; i < n; i += 2 {
		if id := fmt.Sprintf("w%02d", i); !seen[id] {
			t.Fatalf("%s stayed deferred but the iterator skipped it", id)
		}
	}
}

func testMetaClosed(t *testing.T, b metastorage.Backend, ctx context.Context) {
	MustStoreMeta(t, b, ctx, "m", Meta(1, metastorage.StateIncoming))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	want := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, metastorage.ErrBackendClosed) {
			t.Errorf("%s after Close = %v, want ErrBackendClosed", op, err)
		}
	}
	want("StoreMeta", b.StoreMeta(ctx, "m", Meta(1, metastorage.StateIncoming)))
	_, err := b.GetMeta(ctx, "m")
	want("GetMeta", err)
	want("UpdateMeta", b.UpdateMeta(ctx, "m", Meta(1, metastorage.StateIncoming)))
	want("DeleteMeta", b.DeleteMeta(ctx, "m"))
	want("MoveToState", b.MoveToState(ctx, "m", metastorage.StateIncoming, metastorage.StateActive))
	_, err = b.ListMessages(ctx, metastorage.StateIncoming, metastorage.MessageListOptions{})
	want("ListMessages", err)
	_, err = b.NewMessageIterator(ctx, metastorage.StateIncoming, 1)
	want("NewMessageIterator", err)
}

// QueueCycle is what RetrySpool does for one message processed
// successfully, with its defaults: enqueue (StoreData, StoreMeta
// incoming), scheduler (MoveToState incoming -> active), worker (GetMeta,
// GetDataReader and read, GetMeta again), then DeleteData and DeleteMeta.
func QueueCycle(ctx context.Context, data datastorage.Backend, meta metastorage.Backend, id string, body []byte) error {
	if _, err := data.StoreData(ctx, id, bytes.NewReader(body)); err != nil {
		return err
	}
	now := time.Now()
	if err := meta.StoreMeta(ctx, id, metastorage.MessageMetadata{ID: id, State: metastorage.StateIncoming, MaxAttempts: 3,
		NextRetry: now, Created: now, Updated: now, Size: int64(len(body)), Headers: map[string]string{"to": "x@example.com"}}); err != nil {
		return err
	}
	if err := meta.MoveToState(ctx, id, metastorage.StateIncoming, metastorage.StateActive); err != nil {
		return err
	}
	if _, err := meta.GetMeta(ctx, id); err != nil {
		return err
	}
	r, err := data.GetDataReader(ctx, id)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, r)
	r.Close()
	if err != nil {
		return err
	}
	if _, err := meta.GetMeta(ctx, id); err != nil {
		return err
	}
	if err := data.DeleteData(ctx, id); err != nil {
		return err
	}
	return meta.DeleteMeta(ctx, id)
}

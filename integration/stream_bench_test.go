package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// heapSampler records the peak of live heap objects while it runs.
type heapSampler struct {
	peak atomic.Uint64
	stop chan struct{}
	done sync.WaitGroup
}

func heapInUse() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func startHeapSampler() *heapSampler {
	h := &heapSampler{stop: make(chan struct{})}
	h.done.Go(func() {
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			if v := heapInUse(); v > h.peak.Load() {
				h.peak.Store(v)
			}
			select {
			case <-h.stop:
				return
			case <-t.C:
			}
		}
	})
	return h
}

func (h *heapSampler) Stop() uint64 {
	close(h.stop)
	h.done.Wait()
	return h.peak.Load()
}

// BenchmarkLargeBody stores and reads a 256 MiB body through the streaming
// path and reports the peak growth of the Go heap over the round trip.
func BenchmarkLargeBody(b *testing.B) {
	const size = 256 << 20
	be := plainBackend(b, "bench_large")
	ctx := context.Background()
	var peakGrowth uint64
	b.SetBytes(size)
	for b.Loop() {
		runtime.GC()
		base := heapInUse()
		h := startHeapSampler()
		if _, err := be.StoreData(ctx, "large", bodyReader(1, size)); err != nil {
			b.Fatal(err)
		}
		r, err := be.GetDataReader(ctx, "large")
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, r)
		r.Close()
		if err != nil || n != size {
			b.Fatalf("read %d bytes: %v", n, err)
		}
		if peak := h.Stop(); peak > base {
			peakGrowth = max(peakGrowth, peak-base)
		}
	}
	b.ReportMetric(float64(peakGrowth)/(1<<20), "peak-heap-MiB")
}

// BenchmarkBodySizes compares, in one run, the streaming store (StoreData)
// with the buffered one (Put of a body already in memory) at 1 KiB, 64 KiB,
// 1 MiB (the inline limit) and 4 MiB (chunked), serially.
func BenchmarkBodySizes(b *testing.B) {
	be, buffered := plainBackend(b, "bench_sizes"), plainStore(b, "bench_sizes")
	ctx := context.Background()
	for _, size := range []int{1 << 10, 64 << 10, 1 << 20, 4 << 20} {
		body := bytes.Repeat([]byte("y"), size)
		b.Run(fmt.Sprintf("size=%dKiB/streaming", size>>10), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := be.StoreData(ctx, "s", bytes.NewReader(body)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("size=%dKiB/buffered", size>>10), func(b *testing.B) {
			b.SetBytes(int64(size))
			if size > 1<<20 {
				b.Skip("the buffered path keeps one value per body; above the inline limit only the streaming path exists")
			}
			for b.Loop() {
				if err := buffered.Put(ctx, "s", body); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("size=%dKiB/read", size>>10), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				r, err := be.GetDataReader(ctx, "s")
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, r); err != nil {
					b.Fatal(err)
				}
				r.Close()
			}
		})
	}
}

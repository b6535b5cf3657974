package engine

import (
	"context"
	"testing"

	"github.com/pgtenant/pgtenant/internal/testdb"
)

func TestMain(m *testing.M) {
	scanHook = func(ctx context.Context, at scanStage) {
		if h, ok := ctx.Value(hooksKey{}).(hooks); ok && h[at] != nil {
			h[at]()
		}
	}
	testdb.Main(m, false)
}

type hooksKey struct{}

type hooks [2]func()

// withScanHooks returns a context whose chunked reads call before between
// reading the message row and scanning its pieces, and after once the
// scan started (see scanHook). Either may be nil.
func withScanHooks(ctx context.Context, before, after func()) context.Context {
	return context.WithValue(ctx, hooksKey{}, hooks{before, after})
}

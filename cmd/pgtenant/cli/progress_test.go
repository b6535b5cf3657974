package cli

import (
	"bytes"
	"strings"
	"testing"
)

// TestProgressWithoutTerminal checks the lines a run shows in a log or a
// pipe: one at every tenth, the last count reached, no control codes.
func TestProgressWithoutTerminal(t *testing.T) {
	for _, tc := range []struct {
		total, done int
		want        string
	}{
		{25, 25, "x: 2/25 x: 4/25 x: 6/25 x: 8/25 x: 10/25 x: 12/25 x: 14/25 x: 16/25 x: 18/25 x: 20/25 x: 22/25 x: 24/25 x: 25/25"},
		{100, 100, "x: 10/100 x: 20/100 x: 30/100 x: 40/100 x: 50/100 x: 60/100 x: 70/100 x: 80/100 x: 90/100 x: 100/100"},
		{100, 37, "x: 10/100 x: 20/100 x: 30/100 x: 37/100"}, // a run that stopped
		{3, 3, "x: 1/3 x: 2/3 x: 3/3"},
	} {
		var buf bytes.Buffer
		p := newProgress(&buf, "x", tc.total)
		for range tc.done {
			p.add()
		}
		p.finish()
		if got := strings.Join(strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n"), " "); got != tc.want {
			t.Errorf("%d of %d: %q, want %q", tc.done, tc.total, got, tc.want)
		}
	}
	// Counts set out of order (concurrent workers) never go back.
	var buf bytes.Buffer
	p := newProgress(&buf, "x", 10)
	for _, d := range []int{3, 1} {
		p.set(d)
	}
	p.finish()
	if got := buf.String(); got != "x: 1/10\nx: 2/10\nx: 3/10\n" {
		t.Errorf("out of order: %q", got)
	}
}

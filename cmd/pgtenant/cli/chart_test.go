package cli

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBenchChart draws a chart with two panels (body sizes) of three modes
// at two tenant counts, and checks that it is a PNG sized for them, and
// that the SVG version names every mode in its legend and labels its axes.
func TestBenchChart(t *testing.T) {
	var results []benchResult
	for _, size := range []int{1024, 65536} {
		for i, mode := range []string{"schema", "table", "shared"} {
			for _, n := range []int{1, 1000} {
				results = append(results, benchResult{isolation: mode, tenants: n, size: size, concurrency: 16,
					cycles: 1000 * (i + 1) / n, seconds: 1, p50: map[string]time.Duration{}, p99: map[string]time.Duration{}})
			}
		}
	}
	dir := t.TempDir()
	pngPath := filepath.Join(dir, "c.png")
	if err := writeBenchChart(pngPath, results); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(pngPath)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() < 400 || b.Dy() < b.Dx()/2 {
		t.Errorf("two panels in %dx%d pixels", b.Dx(), b.Dy())
	}
	svgPath := filepath.Join(dir, "c.svg")
	if err := writeBenchChart(svgPath, results); err != nil {
		t.Fatal(err)
	}
	svg, err := os.ReadFile(svgPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"schema-per-tenant", "table-per-tenant", "shared table", "cycles per second",
		"tenants in the table or database", "1024-byte bodies", "65536-byte bodies", "1000 tenants"} {
		if !strings.Contains(string(svg), want) {
			t.Errorf("chart lacks %q", want)
		}
	}
}

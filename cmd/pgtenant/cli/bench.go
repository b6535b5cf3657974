package cli

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"image/color"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/pgtenant/pgtenant/tenant"
	"github.com/spf13/cobra"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// benchResult is one combination's outcome.
type benchResult struct {
	isolation   string
	tenants     int
	size        int
	concurrency int
	cycles      int
	seconds     float64
	p50, p99    map[string]time.Duration // by operation
}

func (r benchResult) label() string {
	return fmt.Sprintf("%s/%dt/%dB/c%d", r.isolation, r.tenants, r.size, r.concurrency)
}

// ints reads flag's comma-separated list of positive numbers.
func ints(flag, s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, usageError{fmt.Errorf("%s %q: want a comma-separated list of positive numbers", flag, s)}
		}
		out = append(out, n)
	}
	return out, nil
}

// benchFlags are bench's flags as typed.
type benchFlags struct {
	tenants, sizes, conc, modes, csv, chart string
	duration                                time.Duration
	keep                                    bool
}

// benchPlan is what bench runs: every combination of tenant count, body
// size, concurrency and mode.
type benchPlan struct {
	tenants, sizes, concs []int
	modes                 []string
	duration              time.Duration
	keep                  bool
}

// plan checks the flags.
func (fl benchFlags) plan() (benchPlan, error) {
	var p benchPlan
	var err error
	if p.tenants, err = ints("--tenants", fl.tenants); err != nil {
		return p, err
	}
	if p.sizes, err = ints("--sizes", fl.sizes); err != nil {
		return p, err
	}
	if p.concs, err = ints("--concurrency", fl.conc); err != nil {
		return p, err
	}
	for _, m := range strings.Split(fl.modes, ",") {
		m = strings.TrimSpace(m)
		if _, err := parseMode("--modes", m); err != nil {
			return p, err
		}
		p.modes = append(p.modes, m)
	}
	if fl.duration <= 0 {
		return p, usageError{fmt.Errorf("--duration %s: must be positive", fl.duration)}
	}
	if ext := strings.ToLower(filepath.Ext(fl.chart)); fl.chart != "" && ext != ".png" && ext != ".svg" {
		return p, usageError{fmt.Errorf("--chart %q: use a .png or .svg file", fl.chart)}
	}
	p.duration, p.keep = fl.duration, fl.keep
	return p, nil
}

func benchCmd(o *options) *cobra.Command {
	var fl benchFlags
	c := &cobra.Command{
		Use:   "bench",
		Short: "Load generator: store+read+delete cycles over tenants x body size x concurrency x isolation",
		Long: "bench provisions the tenants bench-00000, bench-00001, ... in table pgtenant_bench, then runs\n" +
			"store+read+delete cycles for --duration per combination, and prints cycles/s and p50/p99 per\n" +
			"operation. --csv writes the results; --chart writes a bar chart of cycles/s (PNG or SVG, by\n" +
			"extension). The bench tenants are dropped at the end unless --keep.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			plan, err := fl.plan()
			if err != nil {
				return err
			}
			dsn, err := o.checkedDSN()
			if err != nil {
				return err
			}
			total := len(plan.tenants) * len(plan.sizes) * len(plan.concs) * len(plan.modes)
			bar := newProgress(o.stderr, "benchmarking", total)
			var results []benchResult
			for _, mode := range plan.modes {
				res, err := benchMode(cmd.Context(), o, dsn, mode, plan, bar.add)
				results = append(results, res...)
				if err != nil {
					return err
				}
			}
			bar.finish()
			printBench(o.stdout, results)
			if fl.csv != "" {
				if err := writeBenchCSV(fl.csv, results); err != nil {
					return err
				}
			}
			if fl.chart != "" {
				return writeBenchChart(fl.chart, results)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&fl.tenants, "tenants", "1,100", "tenant counts")
	f.StringVar(&fl.sizes, "sizes", "1024", "body sizes in bytes")
	f.StringVar(&fl.conc, "concurrency", "16", "client goroutines")
	f.StringVar(&fl.modes, "modes", "schema,table,shared", "isolation modes")
	f.DurationVar(&fl.duration, "duration", 3*time.Second, "time per combination")
	f.StringVar(&fl.csv, "csv", "", "write results as CSV to this file")
	f.StringVar(&fl.chart, "chart", "", "write a bar chart of cycles/s to this .png or .svg file")
	f.BoolVar(&fl.keep, "keep", false, "keep the bench-NNNNN tenants (by default they are dropped at the end)")
	return c
}

// benchMode runs plan's combinations in one isolation mode, calling step
// after each, and drops the bench tenants at the end unless plan.keep.
func benchMode(ctx context.Context, o *options, dsn, mode string, plan benchPlan, step func()) (_ []benchResult, err error) {
	oi := *o
	oi.isolation, oi.table = mode, "pgtenant_bench"
	f, err := oi.factory(dsn)
	if err != nil {
		return nil, err
	}
	a, err := f.OpenAdmin(ctx)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	r, err := f.Open(ctx)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	all := make([]string, slices.Max(plan.tenants))
	for i := range all {
		all[i] = fmt.Sprintf("bench-%05d", i)
	}
	if !plan.keep {
		defer func() {
			res, derr := a.DropMany(context.WithoutCancel(ctx), all, tenant.BatchOptions{})
			if derr == nil && len(res.Failed) > 0 {
				derr = fmt.Errorf("could not drop %d bench tenants (%s mode); drop them with pgtenant tenants drop", len(res.Failed), mode)
			}
			err = errors.Join(err, derr)
		}()
	}
	var results []benchResult
	for _, n := range plan.tenants {
		ids := all[:n]
		if err := provisionAll(ctx, a, ids, 8, nil); err != nil {
			return results, err
		}
		for _, size := range plan.sizes {
			for _, conc := range plan.concs {
				res, err := benchOne(ctx, r, ids, size, conc, plan.duration)
				if err != nil {
					return results, err
				}
				res.isolation = mode
				results = append(results, res)
				step()
			}
		}
	}
	return results, nil
}

func benchOne(ctx context.Context, r *tenant.Router, ids []string, size, conc int, d time.Duration) (benchResult, error) {
	body := bytes.Repeat([]byte("b"), size)
	ctxs := make([]context.Context, len(ids))
	for i, id := range ids {
		ctxs[i] = tenant.WithTenant(ctx, id)
	}
	var (
		mu   sync.Mutex
		lat  = map[string][]time.Duration{}
		wg   sync.WaitGroup
		errs = make(chan error, conc)
	)
	deadline := time.Now().Add(d)
	start := time.Now()
	for w := range conc {
		wg.Go(func() {
			local := map[string][]time.Duration{}
			for i := 0; i == 0 || time.Now().Before(deadline); i++ { // at least one cycle per client
				tctx := ctxs[rand.IntN(len(ctxs))]
				id := fmt.Sprintf("b%d-%d", w, i)
				t0 := time.Now()
				if _, err := r.StoreData(tctx, id, bytes.NewReader(body)); err != nil {
					errs <- err
					return
				}
				t1 := time.Now()
				rc, err := r.GetDataReader(tctx, id)
				if err == nil {
					_, err = io.Copy(io.Discard, rc)
					rc.Close()
				}
				if err != nil {
					errs <- err
					return
				}
				t2 := time.Now()
				if err := r.DeleteData(tctx, id); err != nil {
					errs <- err
					return
				}
				local["store"] = append(local["store"], t1.Sub(t0))
				local["read"] = append(local["read"], t2.Sub(t1))
				local["delete"] = append(local["delete"], time.Since(t2))
			}
			mu.Lock()
			for k, v := range local {
				lat[k] = append(lat[k], v...)
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return benchResult{}, err
	}
	res := benchResult{tenants: len(ids), size: size, concurrency: conc, cycles: len(lat["store"]),
		seconds: time.Since(start).Seconds(), p50: map[string]time.Duration{}, p99: map[string]time.Duration{}}
	for k, v := range lat {
		slices.Sort(v)
		res.p50[k] = v[len(v)*50/100]
		res.p99[k] = v[min(len(v)-1, len(v)*99/100)]
	}
	return res, nil
}

var benchOps = []string{"store", "read", "delete"}

func printBench(w io.Writer, results []benchResult) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "MODE\tTENANTS\tSIZE\tCLIENTS\tCYCLES/S")
	for _, op := range benchOps {
		fmt.Fprintf(tw, "\t%s p50\t%s p99", op, op)
	}
	fmt.Fprintln(tw)
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.0f", r.isolation, r.tenants, r.size, r.concurrency, float64(r.cycles)/r.seconds)
		for _, op := range benchOps {
			fmt.Fprintf(tw, "\t%v\t%v", r.p50[op].Round(time.Microsecond), r.p99[op].Round(time.Microsecond))
		}
		fmt.Fprintln(tw)
	}
	_ = tw.Flush()
}

func writeBenchCSV(path string, results []benchResult) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	head := []string{"mode", "tenants", "size", "concurrency", "cycles_per_s"}
	for _, op := range benchOps {
		head = append(head, op+"_p50_us", op+"_p99_us")
	}
	_ = w.Write(head)
	for _, r := range results {
		row := []string{r.isolation, strconv.Itoa(r.tenants), strconv.Itoa(r.size), strconv.Itoa(r.concurrency),
			strconv.FormatFloat(float64(r.cycles)/r.seconds, 'f', 1, 64)}
		for _, op := range benchOps {
			row = append(row, strconv.FormatInt(r.p50[op].Microseconds(), 10), strconv.FormatInt(r.p99[op].Microseconds(), 10))
		}
		_ = w.Write(row)
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// modeColors gives each isolation mode its colour in the chart.
var modeColors = map[string]color.Color{
	"schema": color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	"table":  color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	"shared": color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
}

// modeLabels names each isolation mode in the chart's legend.
var modeLabels = map[string]string{
	"schema": "schema-per-tenant",
	"table":  "table-per-tenant",
	"shared": "shared table",
}

// writeBenchChart draws cycles/s as grouped bars: tenant counts along the
// x axis, one bar (and colour) per isolation mode, and one panel per body
// size and client count.
func writeBenchChart(path string, results []benchResult) error {
	type facet struct{ size, conc int }
	var (
		facets  []facet
		modes   []string
		tenants []int
	)
	for _, r := range results {
		if f := (facet{r.size, r.concurrency}); !slices.Contains(facets, f) {
			facets = append(facets, f)
		}
		if !slices.Contains(modes, r.isolation) {
			modes = append(modes, r.isolation)
		}
		if !slices.Contains(tenants, r.tenants) {
			tenants = append(tenants, r.tenants)
		}
	}
	slices.Sort(tenants)
	labels := make([]string, len(tenants))
	for i, n := range tenants {
		labels[i] = fmt.Sprintf("%d tenant", n)
		if n != 1 {
			labels[i] += "s"
		}
	}
	const barWidth = 20
	plots := make([][]*plot.Plot, len(facets))
	for fi, f := range facets {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("%d-byte bodies, %d clients", f.size, f.conc)
		p.Title.Padding = vg.Points(8)
		p.Y.Label.Text = "store+read+delete cycles per second"
		p.X.Label.Text = "tenants in the table or database"
		p.Legend.Top, p.Legend.Left = true, true
		p.Y.Min = 0
		for mi, mode := range modes {
			values := make(plotter.Values, len(tenants))
			for _, r := range results {
				if r.isolation == mode && r.size == f.size && r.concurrency == f.conc {
					values[slices.Index(tenants, r.tenants)] = float64(r.cycles) / r.seconds
				}
			}
			bars, err := plotter.NewBarChart(values, vg.Points(barWidth))
			if err != nil {
				return err
			}
			bars.Color = modeColors[mode]
			bars.LineStyle.Width = 0
			bars.Offset = vg.Points(float64(mi-len(modes)/2) * barWidth)
			if len(modes)%2 == 0 {
				bars.Offset += vg.Points(barWidth / 2)
			}
			p.Add(bars)
			p.Legend.Add(modeLabels[mode], bars)
		}
		p.NominalX(labels...)
		// Head room above the highest bar, so that no bar meets the title
		// or the legend.
		p.Y.Max *= 1.4
		plots[fi] = []*plot.Plot{p}
	}
	width, height := vg.Length(max(5, 1.6*float64(len(tenants)*len(modes))/2))*vg.Inch, vg.Length(len(facets))*3.2*vg.Inch
	img, err := draw.NewFormattedCanvas(width, height, strings.TrimPrefix(strings.ToLower(filepath.Ext(path)), "."))
	if err != nil {
		return err
	}
	canvases := plot.Align(plots, draw.Tiles{Rows: len(facets), Cols: 1, PadX: vg.Millimeter, PadY: 4 * vg.Millimeter,
		PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 2 * vg.Millimeter},
		draw.New(img))
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := img.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

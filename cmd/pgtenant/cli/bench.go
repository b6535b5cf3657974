package cli

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
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
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
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

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, usageError{fmt.Errorf("%q: want a comma-separated list of positive numbers", s)}
		}
		out = append(out, n)
	}
	return out, nil
}

func benchCmd(o *options) *cobra.Command {
	var (
		tenantsFlag, sizesFlag, concFlag, isoFlag, csvPath, chartPath string
		duration                                                      time.Duration
	)
	c := &cobra.Command{
		Use:   "bench",
		Short: "Load generator: store+read+delete cycles over tenants x body size x concurrency x isolation",
		Long: "bench provisions the tenants, then runs store+read+delete cycles for --duration per\n" +
			"combination, and prints cycles/s and p50/p99 per operation. --csv writes the results;\n" +
			"--chart writes a bar chart of cycles/s (PNG or SVG, by extension).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tenantCounts, err := ints(tenantsFlag)
			if err != nil {
				return err
			}
			sizes, err := ints(sizesFlag)
			if err != nil {
				return err
			}
			concs, err := ints(concFlag)
			if err != nil {
				return err
			}
			isos := strings.Split(isoFlag, ",")
			if duration <= 0 {
				return usageError{fmt.Errorf("--duration must be positive")}
			}
			dsn := o.databaseURL()
			if dsn == "" {
				return usageError{fmt.Errorf("no database: pass --dsn or set DATABASE_URL")}
			}
			total := len(tenantCounts) * len(sizes) * len(concs) * len(isos)
			bar := progressbar.NewOptions(total, progressbar.OptionSetWriter(o.stderr),
				progressbar.OptionSetDescription("benchmarking"), progressbar.OptionShowCount())
			var results []benchResult
			for _, iso := range isos {
				oi := *o
				oi.isolation = strings.TrimSpace(iso)
				oi.table = "pgtenant_bench"
				r, err := oi.routerOn(cmd.Context(), dsn)
				if err != nil {
					return err
				}
				for _, n := range tenantCounts {
					ids := make([]string, n)
					for i := range ids {
						ids[i] = fmt.Sprintf("bench-%05d", i)
						if err := r.Provision(cmd.Context(), ids[i]); err != nil {
							r.Close()
							return err
						}
					}
					for _, size := range sizes {
						for _, conc := range concs {
							res, err := benchOne(cmd.Context(), r, ids, size, conc, duration)
							if err != nil {
								r.Close()
								return err
							}
							res.isolation = oi.isolation
							results = append(results, res)
							_ = bar.Add(1)
						}
					}
				}
				r.Close()
			}
			_ = bar.Finish()
			fmt.Fprintln(o.stderr)
			printBench(o.stdout, results)
			if csvPath != "" {
				if err := writeBenchCSV(csvPath, results); err != nil {
					return err
				}
			}
			if chartPath != "" {
				return writeBenchChart(chartPath, results)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&tenantsFlag, "tenants", "1,100", "tenant counts")
	f.StringVar(&sizesFlag, "sizes", "1024", "body sizes in bytes")
	f.StringVar(&concFlag, "concurrency", "16", "client goroutines")
	f.StringVar(&isoFlag, "modes", "schema,table,shared", "isolation modes")
	f.DurationVar(&duration, "duration", 3*time.Second, "time per combination")
	f.StringVar(&csvPath, "csv", "", "write results as CSV to this file")
	f.StringVar(&chartPath, "chart", "", "write a bar chart of cycles/s to this .png or .svg file")
	return c
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

func writeBenchChart(path string, results []benchResult) error {
	ext := strings.ToLower(filepath.Ext(path))
	if ext != ".png" && ext != ".svg" {
		return usageError{fmt.Errorf("--chart %q: use a .png or .svg file", path)}
	}
	p := plot.New()
	p.Title.Text = "pgtenant: store+read+delete cycles/s"
	p.Y.Label.Text = "cycles/s"
	values := make(plotter.Values, len(results))
	labels := make([]string, len(results))
	for i, r := range results {
		values[i] = float64(r.cycles) / r.seconds
		labels[i] = r.label()
	}
	bars, err := plotter.NewBarChart(values, vg.Points(20))
	if err != nil {
		return err
	}
	p.Add(bars)
	p.NominalX(labels...)
	p.X.Tick.Label.Rotation = 0.6
	p.X.Tick.Label.XAlign = -0.9
	return p.Save(vg.Length(max(6, len(results))*60), 5*vg.Inch, path)
}

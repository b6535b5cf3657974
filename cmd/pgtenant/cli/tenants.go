package cli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgtenant/pgtenant/tenant"
	"github.com/spf13/cobra"
)

// listedOneByOne is the most tenants a batch command reports line by line;
// past it, it shows a progress bar and a summary.
const listedOneByOne = 20

func tenantsCmd(o *options) *cobra.Command {
	c := &cobra.Command{Use: "tenants", Short: "List, provision, drop and inspect tenants", Args: cobra.ArbitraryArgs, RunE: noSubcommand}
	c.AddCommand(listCmd(o), provisionCmd(o), dropCmd(o), statsCmd(o))
	return c
}

func listCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use: "list", Short: "List active tenants", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := o.admin(cmd.Context())
			if err != nil {
				return err
			}
			defer r.Close()
			ids, err := r.List(cmd.Context())
			if err != nil {
				return err
			}
			if len(ids) == 0 {
				// On stderr: stdout stays a list of ids for scripts.
				fmt.Fprintf(o.stderr, "no tenants (isolation %s, table %s)\n", o.isolation, o.table)
			}
			for _, id := range ids {
				fmt.Fprintln(o.stdout, id)
			}
			return nil
		},
	}
}

func provisionCmd(o *options) *cobra.Command {
	var (
		file, span  string
		concurrency int
	)
	c := &cobra.Command{
		Use:   "provision [ID...]",
		Short: "Create tenants' storage (also after drop)",
		Long: "provision creates the storage of the tenants given as arguments, in --file (one id per line,\n" +
			"'-' for stdin; blank lines and lines starting with # are skipped) and in --range, such as\n" +
			"--range s-00001..s-10000. It is idempotent: an active tenant stays as it is, a dropped one comes\n" +
			"back empty. Up to 20 tenants are reported one per line; more show a progress bar and a summary.\n" +
			"A creation that hits a transient bound (a lock timeout, a deadlock) is tried again.",
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := tenantIDs(args, file, span)
			if err != nil {
				return err
			}
			if concurrency < 1 {
				return usageError{fmt.Errorf("--concurrency %d: want at least 1", concurrency)}
			}
			r, err := o.admin(cmd.Context())
			if err != nil {
				return err
			}
			defer r.Close()
			return provisionAll(cmd.Context(), r, ids, concurrency, o)
		},
	}
	c.Flags().StringVar(&file, "file", "", "read tenant ids from this file, one per line ('-': stdin)")
	c.Flags().StringVar(&span, "range", "", "provision FIRST..LAST, ids that end in a number, e.g. s-00001..s-10000")
	c.Flags().IntVar(&concurrency, "concurrency", 8, "tenants created at once")
	return c
}

// tenantIDs gathers the ids of args, file and span, checks them all and
// drops repeats.
func tenantIDs(args []string, file, span string) ([]string, error) {
	ids := slices.Clone(args)
	if file != "" {
		fromFile, err := readIDs(file)
		if err != nil {
			return nil, err
		}
		ids = append(ids, fromFile...)
	}
	if span != "" {
		fromRange, err := expandRange(span)
		if err != nil {
			return nil, err
		}
		ids = append(ids, fromRange...)
	}
	if len(ids) == 0 {
		return nil, usageError{fmt.Errorf("no tenants: give ids as arguments, --file or --range")}
	}
	if err := validateAll(ids); err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(ids))
	return slices.DeleteFunc(ids, func(id string) bool {
		dup := seen[id]
		seen[id] = true
		return dup
	}), nil
}

// readIDs reads one id per line from path ("-": stdin), skipping blank
// lines and # comments.
func readIDs(path string) ([]string, error) {
	var in io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, usageError{fmt.Errorf("--file: %w", err)}
		}
		defer f.Close()
		in = f
	}
	var ids []string
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			ids = append(ids, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return ids, nil
}

// maxRange bounds the ids one --range names.
const maxRange = 1_000_000

// expandRange expands FIRST..LAST, two ids with one prefix that end in
// numbers, into the ids between them. A first number with leading zeros
// sets the width of all (s-0001..s-0100).
func expandRange(span string) ([]string, error) {
	bad := func(why string) error {
		return usageError{fmt.Errorf("--range %q: %s; want FIRST..LAST such as s-00001..s-10000", span, why)}
	}
	first, last, ok := strings.Cut(span, "..")
	if !ok {
		return nil, bad("no ..")
	}
	split := func(id string) (string, string) {
		i := len(id)
		for i > 0 && id[i-1] >= '0' && id[i-1] <= '9' {
			i--
		}
		return id[:i], id[i:]
	}
	p1, d1 := split(first)
	p2, d2 := split(last)
	if d1 == "" || d2 == "" || p1 != p2 {
		return nil, bad("both ends need the same prefix and a number at the end")
	}
	from, err1 := strconv.Atoi(d1)
	to, err2 := strconv.Atoi(d2)
	if err1 != nil || err2 != nil || to < from {
		return nil, bad("the last number must not be smaller than the first")
	}
	if to-from+1 > maxRange {
		return nil, bad(fmt.Sprintf("more than %d ids", maxRange))
	}
	width := 0
	if len(d1) > 1 && d1[0] == '0' {
		width = len(d1)
	}
	ids := make([]string, 0, to-from+1)
	for n := from; n <= to; n++ {
		ids = append(ids, fmt.Sprintf("%s%0*d", p1, width, n))
	}
	return ids, nil
}

// validateAll checks every id before anything runs: one bad id is a usage
// error and nothing is done.
func validateAll(ids []string) error {
	for _, id := range ids {
		if err := tenant.Validate(id); err != nil {
			return err
		}
	}
	return nil
}

// provisionAll provisions ids, concurrency at once. With out it reports
// each tenant (up to listedOneByOne) or a progress bar and a summary; it
// fails if any tenant failed.
func provisionAll(ctx context.Context, r *tenant.Admin, ids []string, concurrency int, out *options) error {
	start := time.Now()
	rep := newBatchReport(out, "provisioning", ids)
	res, err := r.ProvisionMany(ctx, ids, tenant.BatchOptions{Concurrency: concurrency,
		Progress: func(done, _ int, id string, err error) { rep.one(done, id, "provisioned "+id, err) }})
	rep.finish(fmt.Sprintf("provisioned %d tenants in %s (%.0f/s)", res.Provisioned,
		time.Since(start).Round(time.Millisecond), float64(res.Provisioned)/time.Since(start).Seconds()))
	return batchErr(err, "provision", res.Failed, len(ids))
}

// batchReport shows a batch command's outcome: for a few tenants a line
// each, in the order given; for many a progress bar, the failures as they
// come and a summary; nothing without options.
type batchReport struct {
	o     *options
	ids   []string
	bar   *progress
	lines map[string]string
	errs  map[string]error
}

func newBatchReport(o *options, what string, ids []string) *batchReport {
	rep := &batchReport{o: o, ids: ids, lines: map[string]string{}, errs: map[string]error{}}
	if o != nil && len(ids) > listedOneByOne {
		rep.bar = newProgress(o.stderr, what, len(ids))
	}
	return rep
}

// one records a tenant done: its line on success, its error on failure.
func (rep *batchReport) one(done int, id, line string, err error) {
	if rep.o == nil {
		return
	}
	if rep.bar == nil {
		rep.lines[id], rep.errs[id] = line, err
		return
	}
	if err != nil {
		rep.bar.note("%s: %v", id, err)
	}
	rep.bar.set(done)
}

// finish prints the lines, or ends the progress bar and prints summary.
func (rep *batchReport) finish(summary string) {
	switch {
	case rep.o == nil:
	case rep.bar == nil:
		for _, id := range rep.ids {
			if err := rep.errs[id]; err != nil {
				fmt.Fprintf(rep.o.stderr, "%s: %v\n", id, err)
			} else if line, ok := rep.lines[id]; ok {
				fmt.Fprintln(rep.o.stdout, line)
			}
		}
	default:
		rep.bar.finish()
		fmt.Fprintln(rep.o.stdout, summary)
	}
}

// batchErr is a batch's error: ctx's, or a count of the failed tenants.
func batchErr(err error, verb string, failed map[string]error, n int) error {
	if err == nil && len(failed) > 0 {
		err = fmt.Errorf("%d of %d tenants failed to %s (see above)", len(failed), n, verb)
	}
	return err
}

func dropCmd(o *options) *cobra.Command {
	var concurrency int
	c := &cobra.Command{
		Use:   "drop ID...",
		Short: "Offboard tenants: tombstone, then remove their data",
		Long: "drop tombstones each tenant, so that its writes are refused on every host, then removes its\n" +
			"data. It is idempotent: a tenant that was never provisioned is reported and left alone, and\n" +
			"one already dropped is dropped again (which finishes a drop that was interrupted).",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, ids []string) error {
			if err := validateAll(ids); err != nil {
				return err
			}
			r, err := o.admin(cmd.Context())
			if err != nil {
				return err
			}
			defer r.Close()
			// Say what each tenant was: absent ones are not touched.
			was := make(map[string]tenant.Status, len(ids))
			var unique, present []string
			for _, id := range ids {
				if _, seen := was[id]; seen {
					continue
				}
				info, err := r.Info(cmd.Context(), id)
				if err != nil {
					return err
				}
				was[id] = info.Status
				unique = append(unique, id)
				if info.Status != tenant.Absent {
					present = append(present, id)
				}
			}
			start := time.Now()
			rep := newBatchReport(o, "dropping", unique)
			absent := len(unique) - len(present)
			for _, id := range unique {
				if was[id] == tenant.Absent {
					rep.one(0, id, fmt.Sprintf("no tenant %q (nothing to drop)", id), nil)
				}
			}
			res, err := r.DropMany(cmd.Context(), present, tenant.BatchOptions{Concurrency: concurrency,
				Progress: func(done, _ int, id string, err error) {
					line := "dropped " + id
					if was[id] == tenant.Dropped {
						line = id + " was already dropped"
					}
					rep.one(absent+done, id, line, err)
				}})
			summary := fmt.Sprintf("dropped %d tenants in %s", res.Dropped, time.Since(start).Round(time.Millisecond))
			if absent > 0 {
				summary += fmt.Sprintf(" (%d were never there)", absent)
			}
			rep.finish(summary)
			return batchErr(err, "drop", res.Failed, len(present))
		},
	}
	c.Flags().IntVar(&concurrency, "concurrency", 4, "tenants dropped at once")
	return c
}

func statsCmd(o *options) *cobra.Command {
	var raw bool
	c := &cobra.Command{
		Use:   "stats [ID]",
		Short: "Exact statistics of one tenant, or an overview of all",
		Long: fmt.Sprintf("stats ID counts one tenant's messages exactly, by queue state. stats alone gives an overview\n"+
			"of all active tenants: exact counts up to %d tenants, the planner's estimates (marked ~) beyond.", tenant.ExactOverview),
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, ids []string) error {
			if err := validateAll(ids); err != nil {
				return err
			}
			size := humanBytes
			if raw {
				size = func(n int64) string { return strconv.FormatInt(n, 10) }
			}
			r, err := o.admin(cmd.Context())
			if err != nil {
				return err
			}
			defer r.Close()
			if len(ids) == 0 {
				rows, err := r.Overview(cmd.Context())
				if err != nil {
					return err
				}
				if len(rows) == 0 {
					fmt.Fprintf(o.stderr, "no tenants (isolation %s, table %s)\n", o.isolation, o.table)
					return nil
				}
				return printOverview(o.stdout, r, rows, size)
			}
			if err := mustBeActive(cmd.Context(), r, ids[0]); err != nil {
				return err
			}
			st, err := r.Stats(cmd.Context(), ids[0])
			if err != nil {
				return err
			}
			return printStats(o.stdout, r, []tenant.Stats{st}, size)
		},
	}
	c.Flags().BoolVar(&raw, "bytes", false, "print sizes in bytes rather than KiB, MiB, GiB")
	return c
}

// mustBeActive fails for a tenant that is not active: never provisioned,
// or dropped.
func mustBeActive(ctx context.Context, r *tenant.Admin, id string) error {
	info, err := r.Info(ctx, id)
	switch {
	case err != nil:
		return err
	case info.Status == tenant.Absent:
		return fmt.Errorf("no tenant %q in this store (never provisioned); see pgtenant tenants list", id)
	case info.Status == tenant.Dropped:
		return fmt.Errorf("no tenant %q in this store: it was dropped (pgtenant tenants provision %s brings it back, empty)", id, id)
	}
	return nil
}

// humanBytes writes n bytes in binary units: 512 B, 64.0 KiB, 1.5 MiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// where says where a tenant's data lives.
func where(loc tenant.Location) string {
	w := loc.Table.String()
	if loc.Partition != "" {
		w += " (tenant_id = " + loc.Partition + ")"
	}
	return w
}

// queueStates lists RetrySpool's queue states in their order.
var queueStates = []string{"incoming", "active", "deferred", "hold", "bounce", "archived"}

// printStats prints tenants' exact statistics: bodies stored and their
// size, and, for tenants with RetrySpool metadata, messages per queue
// state.
func printStats(w io.Writer, r *tenant.Admin, rows []tenant.Stats, size func(int64) string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tBODIES\tBODY SIZE\tQUEUED\tBY STATE\tSTORED IN")
	for _, s := range rows {
		loc, err := r.Locate(s.Tenant)
		if err != nil {
			return err
		}
		var states []string
		for _, name := range queueStates {
			if n := s.States[name]; n > 0 {
				states = append(states, fmt.Sprintf("%s=%d", name, n))
			}
		}
		byState := strings.Join(states, " ")
		if byState == "" {
			byState = "-"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\n", s.Tenant, s.Messages, size(s.Bytes), s.Queued, byState, where(loc))
	}
	return tw.Flush()
}

// printOverview prints Overview's rows: exact counts as numbers, the
// planner's estimates with a ~, and in the per-tenant modes the table's
// size on disk.
func printOverview(w io.Writer, r *tenant.Admin, rows []tenant.Stats, size func(int64) string) error {
	perTenant := false
	estimated := false
	for _, s := range rows {
		loc, err := r.Locate(s.Tenant)
		if err != nil {
			return err
		}
		perTenant = perTenant || loc.Partition == ""
		estimated = estimated || s.Estimated
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "TENANT\tBODIES\tBODY SIZE\tQUEUED"
	if perTenant {
		head += "\tON DISK"
	}
	fmt.Fprintln(tw, head+"\tSTORED IN")
	for _, s := range rows {
		loc, _ := r.Locate(s.Tenant)
		count := func(n int64) string { return strconv.FormatInt(n, 10) }
		bodySize := size(s.Bytes)
		if s.Estimated {
			count = func(n int64) string { return "~" + strconv.FormatInt(n, 10) }
			bodySize = "-"
		}
		line := fmt.Sprintf("%s\t%s\t%s\t%s", s.Tenant, count(s.Messages), bodySize, count(s.Queued))
		if perTenant {
			line += "\t" + size(s.DiskBytes)
		}
		fmt.Fprintln(tw, line+"\t"+where(loc))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if estimated {
		fmt.Fprintf(w, "~: the planner's estimate (more than %d tenants; 0 until the table is analyzed); pgtenant tenants stats ID counts one exactly\n",
			tenant.ExactOverview)
	}
	return nil
}

package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

// Exit codes.
const (
	ExitOK    = 0 // success
	ExitError = 1 // the command failed (database, data, demo check)
	ExitUsage = 2 // bad arguments or flags, or no database given
)

type usageError struct{ error }

type options struct {
	dsn       string
	isolation string
	table     string
	execMode  string
	affinity  int
	stdout    io.Writer
	stderr    io.Writer
}

// Run runs the command line args and returns the exit code. Output goes to
// stdout, errors to stderr.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o := &options{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "pgtenant",
		Short: "Multi-tenant PostgreSQL storage for RetrySpool message bodies",
		Long: "pgtenant operates pgtenant's tenant storage. Commands that need a database take --dsn or\n" +
			"read DATABASE_URL. Exit codes: 0 success, 1 failure, 2 usage error.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&o.dsn, "dsn", "", "PostgreSQL connection string (default $DATABASE_URL)")
	pf.StringVar(&o.isolation, "isolation", "schema", "isolation mode: schema, table or shared")
	pf.StringVar(&o.table, "table", "retryspool_data", "base table name")
	pf.StringVar(&o.execMode, "exec-mode", "statement", "pgx statement mode: statement (prepared), or describe (no server-side\nprepared statements; use it behind PgBouncer in transaction pooling)")
	pf.IntVar(&o.affinity, "affinity", tenant.DefaultAffinity, "connections per group of tenant-affine connections (0: any connection\nserves any tenant); see the README's Connection affinity")
	root.AddCommand(demoCmd(o), tenantsCmd(o), migrateCmd(o), purgeCmd(o), benchCmd(o))
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	// pgtenant's own errors start with "pgtenant: " already.
	fmt.Fprintln(stderr, "pgtenant:", strings.TrimPrefix(err.Error(), "pgtenant: "))
	if isUsage(err) {
		return ExitUsage
	}
	return ExitError
}

// isUsage reports an error in what the user typed: flags, arguments, a
// tenant id or a table name.
func isUsage(err error) bool {
	var u usageError
	msg := err.Error()
	return errors.As(err, &u) || errors.Is(err, tenant.ErrInvalidTenant) || errors.Is(err, schema.ErrInvalidName) ||
		strings.HasPrefix(msg, "unknown command") || strings.Contains(msg, "arg(s)") || strings.HasPrefix(msg, "unknown flag")
}

// noSubcommand is the RunE of a command that only groups others: a word
// that names none of them is a usage error.
func noSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return usageError{fmt.Errorf("%s needs a command: %s", cmd.Name(), subcommandNames(cmd))}
	}
	return usageError{fmt.Errorf("unknown command %q for %q: want %s", args[0], cmd.CommandPath(), subcommandNames(cmd))}
}

func subcommandNames(cmd *cobra.Command) string {
	var names []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() {
			names = append(names, c.Name())
		}
	}
	return strings.Join(names, ", ")
}

func (o *options) mode() (schema.Isolation, error) {
	return parseMode("--isolation", o.isolation)
}

// parseMode reads an isolation mode given to flag.
func parseMode(flag, s string) (schema.Isolation, error) {
	switch s {
	case "schema":
		return schema.SchemaPerTenant, nil
	case "table":
		return schema.TablePerTenant, nil
	case "shared":
		return schema.SharedTable, nil
	}
	return 0, usageError{fmt.Errorf("%s %q: want schema, table or shared", flag, s)}
}

func (o *options) databaseURL() string {
	if o.dsn != "" {
		return o.dsn
	}
	return os.Getenv("DATABASE_URL")
}

// admin opens an Admin on the configured database.
func (o *options) admin(ctx context.Context) (*tenant.Admin, error) {
	dsn := o.databaseURL()
	if dsn == "" {
		return nil, usageError{errors.New("no database: pass --dsn or set DATABASE_URL")}
	}
	return o.adminOn(ctx, dsn)
}

func (o *options) adminOn(ctx context.Context, dsn string) (*tenant.Admin, error) {
	f, err := o.factory(dsn)
	if err != nil {
		return nil, err
	}
	return f.OpenAdmin(ctx)
}

// factory is the Factory the global flags describe, on dsn.
func (o *options) factory(dsn string) (*tenant.Factory, error) {
	mode, err := o.mode()
	if err != nil {
		return nil, err
	}
	var exec pgx.QueryExecMode
	switch o.execMode {
	case "statement":
		exec = pgx.QueryExecModeCacheStatement
	case "describe":
		exec = pgx.QueryExecModeCacheDescribe
	default:
		return nil, usageError{fmt.Errorf("--exec-mode %q: want statement or describe", o.execMode)}
	}
	if o.affinity < 0 {
		return nil, usageError{fmt.Errorf("--affinity %d: want 0 (off) or connections per group", o.affinity)}
	}
	return tenant.NewFactory(dsn).WithIsolation(mode).WithTableName(o.table).WithExecMode(exec).
		WithConnectionLimits(8, 1).WithConnectionAffinity(o.affinity), nil
}

func tenantsCmd(o *options) *cobra.Command {
	c := &cobra.Command{Use: "tenants", Short: "List, provision, drop and inspect tenants", Args: cobra.ArbitraryArgs, RunE: noSubcommand}
	c.AddCommand(&cobra.Command{
		Use: "list", Short: "List active tenants", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := o.admin(cmd.Context())
			if err != nil {
				return err
			}
			defer r.Close()
			ids, err := r.List(cmd.Context())
			for _, id := range ids {
				fmt.Fprintln(o.stdout, id)
			}
			return err
		},
	}, &cobra.Command{
		Use: "provision ID...", Short: "Create tenants' storage (also after drop)", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, ids []string) error {
			r, err := o.admin(cmd.Context())
			if err != nil {
				return err
			}
			defer r.Close()
			for _, id := range ids {
				if err := r.Provision(cmd.Context(), id); err != nil {
					return err
				}
				fmt.Fprintln(o.stdout, "provisioned", id)
			}
			return nil
		},
	}, &cobra.Command{
		Use: "drop ID...", Short: "Offboard tenants: tombstone, then remove their data", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, ids []string) error {
			r, err := o.admin(cmd.Context())
			if err != nil {
				return err
			}
			defer r.Close()
			res, err := r.DropMany(cmd.Context(), ids, tenant.BatchOptions{})
			failed := res.Failed
			for _, id := range ids {
				if ferr, ok := failed[id]; ok {
					fmt.Fprintf(o.stderr, "drop %s: %v\n", id, ferr)
				} else if err == nil {
					fmt.Fprintln(o.stdout, "dropped", id)
				}
			}
			if err == nil && len(failed) > 0 {
				err = fmt.Errorf("%d of %d drops failed", len(failed), len(ids))
			}
			return err
		},
	}, &cobra.Command{
		Use: "stats [ID]", Short: "Exact statistics of one tenant, or an overview of all", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, ids []string) error {
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
				return printOverview(o.stdout, r, rows)
			}
			if err := tenant.Validate(ids[0]); err != nil {
				return err
			}
			active, err := r.List(cmd.Context())
			if err != nil {
				return err
			}
			if !slices.Contains(active, ids[0]) {
				return fmt.Errorf("no tenant %q in this store (never provisioned, or dropped); see pgtenant tenants list", ids[0])
			}
			st, err := r.Stats(cmd.Context(), ids[0])
			if err != nil {
				return err
			}
			return printStats(o.stdout, r, []tenant.Stats{st})
		},
	})
	return c
}

// where says where a tenant's data lives.
func where(r *tenant.Admin, id string) (string, error) {
	loc, err := r.Locate(id)
	if err != nil {
		return "", err
	}
	w := loc.Table.String()
	if loc.Partition != "" {
		w += " (tenant_id = " + loc.Partition + ")"
	}
	return w, nil
}

// queueStates lists RetrySpool's queue states in their order.
var queueStates = []string{"incoming", "active", "deferred", "hold", "bounce", "archived"}

// printStats prints exact statistics: bodies stored and their bytes, and,
// for tenants with RetrySpool metadata, messages per queue state.
func printStats(w io.Writer, r *tenant.Admin, rows []tenant.Stats) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tBODIES\tBODY BYTES\tQUEUED\tBY STATE\tSTORED IN")
	for _, s := range rows {
		in, err := where(r, s.Tenant)
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
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\n", s.Tenant, s.Messages, s.Bytes, s.Queued, byState, in)
	}
	return tw.Flush()
}

// printOverview prints Overview's figures under names that say what they
// are: in the per-tenant modes estimates and the table's size on disk, in
// SharedTable exact counts and body bytes.
func printOverview(w io.Writer, r *tenant.Admin, rows []tenant.Stats) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	shared := len(rows) > 0
	for _, s := range rows {
		if loc, err := r.Locate(s.Tenant); err == nil && loc.Partition == "" {
			shared = false
		}
	}
	if shared {
		fmt.Fprintln(tw, "TENANT\tBODIES\tBODY BYTES\tQUEUED\tSTORED IN")
	} else {
		fmt.Fprintln(tw, "TENANT\tBODIES (EST.)\tTABLE SIZE ON DISK\tQUEUED (EST.)\tSTORED IN")
	}
	for _, s := range rows {
		in, err := where(r, s.Tenant)
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", s.Tenant, s.Messages, s.Bytes, s.Queued, in)
	}
	return tw.Flush()
}

func migrateCmd(o *options) *cobra.Command {
	var concurrency int
	c := &cobra.Command{
		Use: "migrate", Short: "Bring every tenant's objects to the current schema version", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := o.admin(cmd.Context())
			if err != nil {
				return err
			}
			defer r.Close()
			var bar *progressbar.ProgressBar
			res, err := r.MigrateAll(cmd.Context(), tenant.BatchOptions{Concurrency: concurrency,
				Progress: func(done, total int, _ string, _ error) {
					if bar == nil {
						bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(o.stderr),
							progressbar.OptionSetDescription("migrating"), progressbar.OptionShowCount())
					}
					_ = bar.Set(done)
				}})
			if bar != nil {
				_ = bar.Finish()
				fmt.Fprintln(o.stderr)
			}
			fmt.Fprintf(o.stdout, "version %d: %d migrated, %d already current, %d failed\n",
				schema.CurrentVersion, res.Migrated, res.Current, len(res.Failed))
			for id, ferr := range res.Failed {
				fmt.Fprintf(o.stderr, "migrate %s: %v\n", id, ferr)
			}
			if err == nil && len(res.Failed) > 0 {
				err = fmt.Errorf("%d tenants failed to migrate", len(res.Failed))
			}
			return err
		},
	}
	c.Flags().IntVar(&concurrency, "concurrency", 4, "tenants migrated at once")
	return c
}

func purgeCmd(o *options) *cobra.Command {
	var olderThan time.Duration
	c := &cobra.Command{
		Use: "purge ID...", Short: "Delete tenants' messages not updated for --older-than", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, ids []string) error {
			if olderThan <= 0 {
				return usageError{errors.New("--older-than must be positive, e.g. 24h")}
			}
			r, err := o.admin(cmd.Context())
			if err != nil {
				return err
			}
			defer r.Close()
			for _, id := range ids {
				n, err := r.Purge(cmd.Context(), id, olderThan)
				if err != nil {
					return err
				}
				fmt.Fprintf(o.stdout, "purged %d messages of %s\n", n, id)
			}
			return nil
		},
	}
	c.Flags().DurationVar(&olderThan, "older-than", 0, "age since last update, e.g. 24h (required)")
	return c
}

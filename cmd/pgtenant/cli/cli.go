package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
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
	pf.IntVar(&o.affinity, "affinity", -1, "connections per group of tenant-affine connections (0: any connection serves any\ntenant; default: 1 in the per-tenant modes, 0 in shared); see docs/operations.md")
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

// checkedDSN returns the database given by --dsn or DATABASE_URL: a usage
// error if there is none or it does not parse.
func (o *options) checkedDSN() (string, error) {
	dsn := o.databaseURL()
	if dsn == "" {
		return "", usageError{errors.New("no database: pass --dsn or set DATABASE_URL")}
	}
	return dsn, o.checkDSN(dsn)
}

// checkDSN is a usage error for a connection string that does not parse,
// naming where it came from.
func (o *options) checkDSN(dsn string) error {
	if _, err := pgconn.ParseConfig(dsn); err != nil {
		from := "--dsn"
		if o.dsn == "" {
			from = "DATABASE_URL"
		}
		return usageError{fmt.Errorf("%s is not a PostgreSQL connection string (a URL such as postgres://user@host/db, or host=... dbname=...): %w", from, err)}
	}
	return nil
}

// admin opens an Admin on the configured database.
func (o *options) admin(ctx context.Context) (*tenant.Admin, error) {
	dsn, err := o.checkedDSN()
	if err != nil {
		return nil, err
	}
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
	if err := o.checkDSN(dsn); err != nil {
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
	f := tenant.NewFactory(dsn).WithIsolation(mode).WithTableName(o.table).WithExecMode(exec).WithConnectionLimits(8, 1)
	switch {
	case o.affinity >= 0:
		f = f.WithConnectionAffinity(o.affinity)
	case o.affinity != -1:
		return nil, usageError{fmt.Errorf("--affinity %d: want 0 (off) or connections per group", o.affinity)}
	}
	return f, nil
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
			var bar *progress
			res, err := r.MigrateAll(cmd.Context(), tenant.BatchOptions{Concurrency: concurrency,
				Progress: func(done, total int, _ string, _ error) {
					if bar == nil {
						bar = newProgress(o.stderr, "migrating", total)
					}
					bar.set(done)
				}})
			if bar != nil {
				bar.finish()
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
			if err := validateAll(ids); err != nil {
				return err
			}
			if olderThan <= 0 {
				return usageError{errors.New("--older-than must be positive, e.g. 24h")}
			}
			r, err := o.admin(cmd.Context())
			if err != nil {
				return err
			}
			defer r.Close()
			for _, id := range ids {
				if err := mustBeActive(cmd.Context(), r, id); err != nil {
					return err
				}
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

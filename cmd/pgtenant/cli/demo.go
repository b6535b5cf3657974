package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pgtenant/pgtenant/tenant"
	"github.com/spf13/cobra"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/modules/postgres"
	datastorage "schneider.vip/retryspool/storage/data"
)

// DefaultImage is the PostgreSQL image the demo starts when no database is
// given and PGTENANT_POSTGRES_IMAGE is not set (the tests' choice too).
const DefaultImage = "postgres:17-alpine"

func demoCmd(o *options) *cobra.Command {
	var tenants, messages int
	c := &cobra.Command{
		Use:   "demo",
		Short: "Play a SaaS queue host: several tenants' producers and consumers on one router and one pool",
		Long: "demo stores, reads and deletes messages for several tenants through one router and one\n" +
			"connection pool, prints a per-tenant table and proves that tenants cannot see each other's\n" +
			"messages. Without --dsn and DATABASE_URL it starts a disposable PostgreSQL container\n" +
			"(image $PGTENANT_POSTGRES_IMAGE, default " + DefaultImage + ") and removes it at the end.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tenants < 2 || messages < 1 {
				return usageError{errors.New("--tenants must be at least 2 and --messages at least 1")}
			}
			ctx := cmd.Context()
			dsn := o.databaseURL()
			if dsn == "" {
				image := os.Getenv("PGTENANT_POSTGRES_IMAGE")
				if image == "" {
					image = DefaultImage
				}
				fmt.Fprintf(o.stdout, "starting a disposable PostgreSQL (%s)...\n", image)
				ctr, err := postgres.Run(ctx, image, postgres.WithDatabase("pgtenant"),
					postgres.WithUsername("postgres"), postgres.WithPassword("postgres"), postgres.BasicWaitStrategies())
				defer func() {
					if ctr != nil {
						if err := testcontainers.TerminateContainer(ctr); err != nil {
							fmt.Fprintln(o.stderr, "removing the container:", err)
						}
					}
				}()
				if err != nil {
					return fmt.Errorf("starting PostgreSQL (is Docker running? `make demo` prepares it): %w", err)
				}
				if dsn, err = ctr.ConnectionString(ctx, "sslmode=disable"); err != nil {
					return err
				}
			}
			r, err := o.routerOn(ctx, dsn)
			if err != nil {
				return err
			}
			defer r.Close()
			return runDemo(ctx, o.stdout, r, tenants, messages)
		},
	}
	c.Flags().IntVar(&tenants, "tenants", 4, "number of tenants")
	c.Flags().IntVar(&messages, "messages", 50, "messages each tenant's producer stores")
	return c
}

func body(id string, i int) []byte {
	if i == 0 { // one large message per tenant: streamed in chunks
		return bytes.Repeat([]byte(id+"|"), (3<<20)/(len(id)+1))
	}
	return []byte(fmt.Sprintf("%s: message %d", id, i))
}

func runDemo(ctx context.Context, out io.Writer, r *tenant.Router, tenants, messages int) error {
	ids := make([]string, tenants)
	for i := range ids {
		ids[i] = fmt.Sprintf("demo-tenant-%02d", i+1)
	}
	start := time.Now()
	// Producers: one per tenant, half of the messages through StoreData,
	// half through the writer.
	var wg sync.WaitGroup
	errs := make(chan error, 2*tenants)
	for _, id := range ids {
		wg.Go(func() {
			ctx := tenant.WithTenant(ctx, id)
			for i := range messages {
				if err := produce(ctx, r, fmt.Sprintf("msg-%03d", i), body(id, i), i%2 == 1); err != nil {
					errs <- fmt.Errorf("producer %s: %w", id, err)
					return
				}
			}
		})
	}
	wg.Wait()
	// Consumers: read every message back, check it, delete every other one.
	for _, id := range ids {
		wg.Go(func() {
			ctx := tenant.WithTenant(ctx, id)
			for i := range messages {
				mid := fmt.Sprintf("msg-%03d", i)
				got, err := read(ctx, r, mid)
				if err != nil {
					errs <- fmt.Errorf("consumer %s: %s: %w", id, mid, err)
					return
				}
				if !bytes.Equal(got, body(id, i)) {
					errs <- fmt.Errorf("consumer %s: %s: wrong body", id, mid)
					return
				}
				if i%2 == 0 {
					if err := r.DeleteData(ctx, mid); err != nil {
						errs <- fmt.Errorf("consumer %s: deleting %s: %w", id, mid, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	fmt.Fprintf(out, "%d tenants x %d messages stored, read back, half deleted in %v through one pool (%d connections)\n\n",
		tenants, messages, time.Since(start).Round(time.Millisecond), r.PoolStats().MaxConns)
	rows := make([]tenant.Stats, 0, len(ids))
	for _, id := range ids {
		st, err := r.Stats(ctx, id)
		if err != nil {
			return err
		}
		rows = append(rows, st)
	}
	if err := printStats(out, r, rows); err != nil {
		return err
	}
	// Isolation: every tenant stores the same message id; each reads only
	// its own body, and a tenant without it finds nothing.
	for _, id := range ids {
		if _, err := r.StoreData(tenant.WithTenant(ctx, id), "same-id", strings.NewReader("secret of "+id)); err != nil {
			return err
		}
	}
	for _, id := range ids {
		got, err := read(tenant.WithTenant(ctx, id), r, "same-id")
		if err != nil || string(got) != "secret of "+id {
			return fmt.Errorf("isolation broken: %s read %q (%v)", id, got, err)
		}
	}
	outsider := tenant.WithTenant(ctx, "demo-outsider")
	if _, err := read(outsider, r, "same-id"); !errors.Is(err, datastorage.ErrDataNotFound) {
		return fmt.Errorf("isolation broken: a tenant without the message got %v", err)
	}
	if err := r.DeleteData(outsider, "same-id"); !errors.Is(err, datastorage.ErrDataNotFound) {
		return fmt.Errorf("isolation broken: a tenant without the message deleted one: %v", err)
	}
	fmt.Fprintf(out, "\nisolation: ok (%d tenants stored message \"same-id\"; each read only its own; another tenant found none)\n", tenants)
	failed, err := r.DropMany(ctx, ids, 4)
	if err == nil && len(failed) > 0 {
		err = fmt.Errorf("dropping demo tenants: %v", failed)
	}
	return err
}

func produce(ctx context.Context, r *tenant.Router, id string, data []byte, viaWriter bool) error {
	if !viaWriter {
		_, err := r.StoreData(ctx, id, bytes.NewReader(data))
		return err
	}
	w, err := r.GetDataWriter(ctx, id)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, bytes.NewReader(data)); err != nil {
		_ = w.Close()
		return err
	}
	return w.Close()
}

func read(ctx context.Context, r *tenant.Router, id string) ([]byte, error) {
	rc, err := r.GetDataReader(ctx, id)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

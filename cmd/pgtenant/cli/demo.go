package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pgtenant/pgtenant/tenant"
	"github.com/spf13/cobra"
	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
	"github.com/testcontainers/testcontainers-go/modules/postgres"
	datastorage "schneider.vip/retryspool/storage/data"
	metastorage "schneider.vip/retryspool/storage/meta"
)

// DefaultImage is the PostgreSQL image the demo starts when no database is
// given and PGTENANT_POSTGRES_IMAGE is not set (the tests' choice too).
const DefaultImage = "postgres:17-alpine"

func demoCmd(o *options) *cobra.Command {
	var tenants, messages int
	c := &cobra.Command{
		Use:   "demo",
		Short: "Play a SaaS queue host: several tenants' producers and consumers on one router and one pool",
		Long: "demo plays a queue host with one queue per tenant, all on one connection pool: each tenant's\n" +
			"producer stores message bodies and RetrySpool metadata (state incoming) through storage pinned\n" +
			"to the tenant; its consumer moves each message to active, reads the body back, and either\n" +
			"completes it (deletes body and metadata) or defers it. It prints a per-tenant table and proves\n" +
			"that tenants cannot see each other's messages. Without --dsn and DATABASE_URL it starts a\n" +
			"disposable PostgreSQL container\n" +
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
				// The demo's screen is for the demo: testcontainers' own log
				// lines go nowhere.
				tclog.SetDefault(tclog.NewNoopLogger())
				ctr, err := postgres.Run(ctx, image, testcontainers.WithLogger(tclog.NewNoopLogger()), postgres.WithDatabase("pgtenant"),
					postgres.WithUsername("postgres"), postgres.WithPassword("postgres"), postgres.BasicWaitStrategies())
				defer func() {
					if ctr != nil {
						if err := testcontainers.TerminateContainer(ctr, testcontainers.StopTimeout(time.Second)); err != nil {
							fmt.Fprintln(o.stderr, "removing the container:", err)
						}
					}
				}()
				if err != nil {
					return fmt.Errorf("starting PostgreSQL (%s): %w", containerHint(err, image), err)
				}
				if dsn, err = ctr.ConnectionString(ctx, "sslmode=disable"); err != nil {
					return err
				}
			}
			f, err := o.factory(dsn)
			if err != nil {
				return err
			}
			a, err := f.OpenAdmin(ctx)
			if err != nil {
				return err
			}
			defer a.Close()
			r, err := f.Open(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			return runDemo(ctx, o.stdout, f, a, r, tenants, messages)
		},
	}
	c.Flags().IntVar(&tenants, "tenants", 4, "number of tenants")
	c.Flags().IntVar(&messages, "messages", 50, "messages each tenant's producer stores")
	return c
}

// containerHint says what to do about a container that did not start.
func containerHint(err error, image string) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "reaper"):
		return "testcontainers' reaper image is not available here: set TESTCONTAINERS_RYUK_DISABLED=true, as `make demo` does"
	case strings.Contains(msg, "registry") || strings.Contains(msg, "pull"):
		return "image " + image + " is not present and cannot be pulled: `make demo` builds a local image, or set PGTENANT_POSTGRES_IMAGE to one you have"
	}
	return "is Docker running? `make demo` prepares it"
}

func body(id string, i int) []byte {
	if i == 0 { // one large message per tenant: streamed in chunks
		return bytes.Repeat([]byte(id+"|"), (3<<20)/(len(id)+1))
	}
	return []byte(fmt.Sprintf("%s: message %d", id, i))
}

// queue is one tenant's storage in the demo: bodies and metadata, both
// pinned to the tenant and sharing the host's pool.
type queue struct {
	id   string
	data datastorage.Backend
	meta metastorage.Backend
}

func runDemo(ctx context.Context, out io.Writer, f *tenant.Factory, a *tenant.Admin, r *tenant.Router, tenants, messages int) (err error) {
	ids := make([]string, tenants)
	for i := range ids {
		ids[i] = fmt.Sprintf("demo-tenant-%02d", i+1)
	}
	// Provision first: a tenant dropped by an earlier demo on the same
	// database comes back, empty.
	for _, id := range append(slices.Clone(ids), "demo-outsider") {
		if err := a.Provision(ctx, id); err != nil {
			return err
		}
	}
	// One queue per tenant, as a RetrySpool host runs them: storage pinned
	// to the tenant, so the queue's workers need no tenant in their context.
	queues := make([]queue, 0, tenants)
	defer func() {
		for _, q := range queues {
			err = errors.Join(err, q.data.Close(), q.meta.Close())
		}
	}()
	for _, id := range ids {
		data, err := f.ForTenant(id).Create()
		if err != nil {
			return err
		}
		meta, err := f.ForTenant(id).Meta().Create()
		if err != nil {
			data.Close()
			return err
		}
		queues = append(queues, queue{id, data, meta})
	}
	start := time.Now()
	if err := eachQueue(queues, messages, produceOne(ctx)); err != nil {
		return err
	}
	if err := eachQueue(queues, messages, consumeOne(ctx)); err != nil {
		return err
	}
	fmt.Fprintf(out, "%d tenants x %d messages queued, taken, read back, half completed and half deferred in %v through one pool (%d connections)\n\n",
		tenants, messages, time.Since(start).Round(time.Millisecond), a.PoolStats().MaxConns)
	rows := make([]tenant.Stats, 0, len(ids))
	for _, id := range ids {
		st, err := a.Stats(ctx, id)
		if err != nil {
			return err
		}
		rows = append(rows, st)
	}
	if err := printStats(out, a, rows, humanBytes); err != nil {
		return err
	}
	if err := checkIsolation(ctx, r, queues); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nisolation: ok (%d tenants stored message \"same-id\"; each read only its own; another tenant found none;"+
		" %s's queue refused a write for %s)\n", tenants, ids[0], ids[1])
	res, err := a.DropMany(ctx, append(ids, "demo-outsider"), tenant.BatchOptions{})
	if err == nil && len(res.Failed) > 0 {
		err = fmt.Errorf("dropping demo tenants: %v", res.Failed)
	}
	return err
}

// eachQueue runs step for messages messages of every queue, a goroutine
// per queue, and returns the first error.
func eachQueue(queues []queue, messages int, step func(q queue, i int, mid string) error) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(queues))
	for _, q := range queues {
		wg.Go(func() {
			for i := range messages {
				mid := fmt.Sprintf("msg-%03d", i)
				if err := step(q, i, mid); err != nil {
					errs <- fmt.Errorf("%s: %s: %w", q.id, mid, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// produceOne is a tenant's producer: half of the bodies through StoreData,
// half through the writer, each with its metadata in state incoming.
func produceOne(ctx context.Context) func(q queue, i int, mid string) error {
	return func(q queue, i int, mid string) error {
		if err := produce(ctx, q.data, mid, body(q.id, i), i%2 == 1); err != nil {
			return fmt.Errorf("producing: %w", err)
		}
		now := time.Now()
		md := metastorage.MessageMetadata{ID: mid, State: metastorage.StateIncoming, MaxAttempts: 3,
			Created: now, Updated: now, NextRetry: now, Size: int64(len(body(q.id, i)))}
		if err := q.meta.StoreMeta(ctx, mid, md); err != nil {
			return fmt.Errorf("producing: %w", err)
		}
		return nil
	}
}

// consumeOne is a tenant's consumer: it takes each message (incoming to
// active), reads its body and checks it, then completes every other one
// (deletes body and metadata) and defers the rest.
func consumeOne(ctx context.Context) func(q queue, i int, mid string) error {
	return func(q queue, i int, mid string) error {
		if err := q.meta.MoveToState(ctx, mid, metastorage.StateIncoming, metastorage.StateActive); err != nil {
			return fmt.Errorf("taking: %w", err)
		}
		got, err := read(ctx, q.data, mid)
		if err != nil {
			return fmt.Errorf("reading: %w", err)
		}
		if !bytes.Equal(got, body(q.id, i)) {
			return errors.New("wrong body")
		}
		if i%2 == 0 {
			err = errors.Join(q.data.DeleteData(ctx, mid), q.meta.DeleteMeta(ctx, mid))
		} else {
			err = q.meta.MoveToState(ctx, mid, metastorage.StateActive, metastorage.StateDeferred)
		}
		if err != nil {
			return fmt.Errorf("finishing: %w", err)
		}
		return nil
	}
}

// checkIsolation has every tenant store the same message id: each reads
// only its own body, a tenant without it finds nothing, and a queue's
// storage refuses a context naming another tenant.
func checkIsolation(ctx context.Context, r *tenant.Router, queues []queue) error {
	for _, q := range queues {
		if _, err := r.StoreData(tenant.WithTenant(ctx, q.id), "same-id", strings.NewReader("secret of "+q.id)); err != nil {
			return err
		}
	}
	for _, q := range queues {
		got, err := read(tenant.WithTenant(ctx, q.id), r, "same-id")
		if err != nil || string(got) != "secret of "+q.id {
			return fmt.Errorf("isolation broken: %s read %q (%v)", q.id, got, err)
		}
	}
	outsider := tenant.WithTenant(ctx, "demo-outsider")
	if _, err := read(outsider, r, "same-id"); !errors.Is(err, datastorage.ErrDataNotFound) {
		return fmt.Errorf("isolation broken: a tenant without the message got %v", err)
	}
	if err := r.DeleteData(outsider, "same-id"); !errors.Is(err, datastorage.ErrDataNotFound) {
		return fmt.Errorf("isolation broken: a tenant without the message deleted one: %v", err)
	}
	a, b := queues[0], queues[1]
	if _, err := a.data.StoreData(tenant.WithTenant(ctx, b.id), "same-id", strings.NewReader("misrouted")); !errors.Is(err, tenant.ErrTenantMismatch) {
		return fmt.Errorf("isolation broken: %s's queue accepted a write for %s: %v", a.id, b.id, err)
	}
	return nil
}

func produce(ctx context.Context, r datastorage.Backend, id string, data []byte, viaWriter bool) error {
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

func read(ctx context.Context, r datastorage.Backend, id string) ([]byte, error) {
	rc, err := r.GetDataReader(ctx, id)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

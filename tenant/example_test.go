package tenant_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/tenant"
	datastorage "schneider.vip/retryspool/storage/data"
	metastorage "schneider.vip/retryspool/storage/meta"
)

// A queue host runs one RetrySpool queue per tenant, each pinned to its
// tenant, all on one pool: RetrySpool's workers run with the context given
// to Start, which names no tenant, so a queue must know its tenant itself.
func ExampleFactory_ForTenant() {
	// One Factory, so one pool and one tenant cache, for the whole host.
	f := tenant.NewFactory(os.Getenv("DATABASE_URL")).
		WithIsolation(tenant.SchemaPerTenant).
		WithConnectionLimits(25, 5)
	ctx := context.Background()
	// An Admin open for as long as the host runs keeps the pool open while
	// tenants' queues are opened and closed.
	admin, err := f.OpenAdmin(ctx)
	check(err)
	defer admin.Close()

	for _, id := range []string{"acme", "globex"} {
		pinned := f.ForTenant(id)
		data, err := pinned.Create() // message bodies: a datastorage.Backend
		check(err)
		meta, err := pinned.Meta().Create() // message metadata: a metastorage.Backend
		check(err)
		// queue := retryspool.New(
		//     retryspool.WithDataStorage(pinned),
		//     retryspool.WithMetaStorage(pinned.Meta()),
		//     retryspool.WithActiveHandler(handler),
		// )
		// queue.Start(ctx) // any context: the storage knows its tenant

		// What the queue does with its storage for one message:
		_, err = data.StoreData(ctx, "order-1", strings.NewReader("hello "+id))
		check(err)
		check(meta.StoreMeta(ctx, "order-1", metastorage.MessageMetadata{ID: "order-1", State: metastorage.StateIncoming}))
		check(meta.MoveToState(ctx, "order-1", metastorage.StateIncoming, metastorage.StateActive))
		md, err := meta.GetMeta(ctx, "order-1")
		check(err)
		rc, err := data.GetDataReader(ctx, "order-1")
		check(err)
		body, err := io.ReadAll(rc)
		check(err)
		rc.Close()
		fmt.Printf("%s: %s %q\n", id, md.State, body)
		data.Close()
		meta.Close()
	}
	// Output:
	// acme: active "hello acme"
	// globex: active "hello globex"
}

// check stops the Example on an error.
func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

// A Router made by Create reads the tenant of every call from the context:
// storage shared by all tenants of a process, such as an API that stores
// and reads bodies on behalf of requests.
func ExampleFactory_Create() {
	f := tenant.NewFactory(os.Getenv("DATABASE_URL")).WithIsolation(tenant.SchemaPerTenant)
	storage, err := f.Create() // a datastorage.Backend (a *tenant.Router)
	if err != nil {
		log.Fatal(err)
	}
	defer storage.Close()

	ctx := tenant.WithTenant(context.Background(), "acme-corp")
	if _, err := storage.StoreData(ctx, "msg-1", strings.NewReader("hello")); err != nil {
		log.Fatal(err)
	}
	rc, err := storage.GetDataReader(ctx, "msg-1")
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(rc)
	rc.Close()
	fmt.Printf("acme-corp reads %q\n", body)

	// Another tenant does not see acme-corp's message.
	other := tenant.WithTenant(context.Background(), "globex")
	_, err = storage.GetDataReader(other, "msg-1")
	fmt.Println("globex:", errors.Is(err, datastorage.ErrDataNotFound))
	// Output:
	// acme-corp reads "hello"
	// globex: true
}

// OpenAdmin returns the administration of the Factory's store: Provision,
// List, Stats, Drop and the rest. It shares the pool of the Factory's
// storage.
func ExampleFactory_OpenAdmin() {
	f := tenant.NewFactory(os.Getenv("DATABASE_URL")).
		WithIsolation(tenant.SharedTable).
		WithTableName("example_bodies")
	ctx := context.Background()
	admin, err := f.OpenAdmin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer admin.Close()
	storage, err := f.Open(ctx) // a *tenant.Router on the same pool
	if err != nil {
		log.Fatal(err)
	}
	defer storage.Close()

	if err := admin.Provision(ctx, "initech"); err != nil {
		log.Fatal(err)
	}
	if _, err := storage.StoreData(tenant.WithTenant(ctx, "initech"), "report", strings.NewReader("TPS")); err != nil {
		log.Fatal(err)
	}
	st, err := admin.Stats(ctx, "initech")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(st.Tenant, st.Messages, "message,", st.Bytes, "bytes")
	if err := admin.Drop(ctx, "initech"); err != nil {
		log.Fatal(err)
	}
	ids, err := admin.List(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("tenants after Drop:", len(ids))
	// Output:
	// initech 1 message, 3 bytes
	// tenants after Drop: 0
}

// Behind PgBouncer in transaction pooling, use the describe exec mode: no
// named statement is prepared on the server connections PgBouncer shares.
func ExampleFactory_WithExecMode() {
	bouncerDSN := os.Getenv("DATABASE_URL") // PgBouncer's address in production
	f := tenant.NewFactory(bouncerDSN).WithExecMode(pgx.QueryExecModeCacheDescribe)
	r, err := f.Create()
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	ctx := tenant.WithTenant(context.Background(), "hooli")
	n, err := r.StoreData(ctx, "m", strings.NewReader("via the pooler"))
	fmt.Println(n, err)
	// Output:
	// 14 <nil>
}

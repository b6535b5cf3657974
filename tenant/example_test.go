package tenant_test

import (
	"fmt"
	"os"

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

	for _, id := range []string{"acme", "globex"} {
		pinned := f.ForTenant(id)
		var data datastorage.Factory = pinned        // message bodies
		var meta metastorage.Factory = pinned.Meta() // message metadata
		// queue := retryspool.New(
		//     retryspool.WithDataStorage(data),
		//     retryspool.WithMetaStorage(meta),
		//     retryspool.WithActiveHandler(handler),
		// )
		// queue.Start(ctx)  // any context: the storage knows its tenant
		// defer queue.Stop(ctx)
		fmt.Println(id, data.Name(), meta.Name())
	}
	// Output:
	// acme pgtenant pgtenant
	// globex pgtenant pgtenant
}

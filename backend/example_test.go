package backend_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"strings"

	"github.com/pgtenant/pgtenant/backend"
)

// The single-table backend replaces RetrySpool's PostgreSQL data backend:
// change the import.
func ExampleNewFactory() {
	dsn := os.Getenv("DATABASE_URL")

	factory := backend.NewFactory(dsn).
		WithTableName("queue.data"). // default "retryspool_data" in public
		WithConnectionLimits(25, 5)  // pgxpool MaxConns / MinConns
	b, err := factory.Create() // creates the table if missing; a datastorage.Backend
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	ctx := context.Background()
	if _, err := b.StoreData(ctx, "msg-1", strings.NewReader("body")); err != nil {
		log.Fatal(err)
	}
	rc, err := b.GetDataReader(ctx, "msg-1")
	if err != nil {
		log.Fatal(err)
	}
	defer rc.Close()
	body, _ := io.ReadAll(rc)
	fmt.Printf("%s: %q\n", factory.Name(), body)
	// Output:
	// postgres: "body"
}

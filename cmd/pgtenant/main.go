// Command pgtenant shows and operates pgtenant's multi-tenant storage: a
// demo that plays a SaaS queue host, tenant administration, migrations and
// purges. Run "pgtenant --help".
package main

import (
	"context"
	"os"
	"os/signal"

	"github.com/pgtenant/pgtenant/cmd/pgtenant/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

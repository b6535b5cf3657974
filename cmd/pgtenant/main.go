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

package tenant_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestConsumerFootprint builds a program that imports only the library
// packages (tenant, backend, schema), as a user's module would, and fails
// if the dependencies of the CLI or of the integration tests (containers,
// Docker, goleak) reach its build, its go.mod or its go.sum, or if its
// go.sum grows over maxConsumerSum lines: module graph pruning keeps them
// out as long as no library package, nor any library package's test,
// imports them.
func TestConsumerFootprint(t *testing.T) {
	const maxConsumerSum = 45
	if testing.Short() {
		t.Skip("builds a consumer module")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("go command not found:", err)
	}
	run := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.Command(goBin, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	root := filepath.Dir(strings.TrimSpace(run(".", "env", "GOMOD")))
	dir := t.TempDir()
	files := map[string]string{
		"go.mod": "module example.com/consumer\n\ngo 1.26\n\nrequire github.com/pgtenant/pgtenant v0.0.0\n\n" +
			"replace github.com/pgtenant/pgtenant => " + root + "\n",
		"main.go": `package main

import (
	"context"
	"fmt"

	"github.com/pgtenant/pgtenant/backend"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
)

func main() {
	f := tenant.NewFactory("postgres://localhost/db").WithIsolation(schema.SharedTable)
	b := backend.NewFactory("postgres://localhost/db")
	fmt.Println(f.Name(), b.Name(), tenant.WithTenant(context.Background(), "acme") != nil)
}
`,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run(dir, "mod", "tidy")
	run(dir, "build", "./...")
	deps := run(dir, "list", "-deps", "-f", "{{with .Module}}{{.Path}}{{end}}", "./...")
	sum, err := os.ReadFile(filepath.Join(dir, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	forbidden := []string{
		"github.com/spf13/cobra", "github.com/schollz/progressbar", "gonum.org/v1/plot", // the CLI
		"github.com/testcontainers/", "github.com/moby/", "github.com/docker/", "go.uber.org/goleak", // the tests
		"go.opentelemetry.io/otel/sdk",
	}
	for _, m := range forbidden {
		if strings.Contains(deps, m) {
			t.Errorf("the consumer's build depends on %s", m)
		}
		if strings.Contains(string(mod), m) {
			t.Errorf("the consumer's go.mod requires %s", m)
		}
		// go mod tidy records checksums for the tests of the packages a
		// module imports too: the library's tests must need none of these.
		if strings.Contains(string(sum), m) {
			t.Errorf("the consumer's go.sum lists %s", m)
		}
	}
	mods := strings.Fields(deps)
	slices.Sort(mods)
	lines := strings.Count(string(sum), "\n")
	t.Logf("consumer go.sum: %d lines; modules built: %s", lines, strings.Join(slices.Compact(mods), " "))
	if lines > maxConsumerSum {
		t.Errorf("the consumer's go.sum has %d lines, want at most %d:\n%s", lines, maxConsumerSum, sum)
	}
}

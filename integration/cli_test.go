package integration

import (
	"bytes"
	"context"
	"encoding/csv"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/pgtenant/pgtenant/cmd/pgtenant/cli"
	"github.com/pgtenant/pgtenant/integration/conformance"
	"github.com/pgtenant/pgtenant/internal/pgtest"
	"github.com/pgtenant/pgtenant/tenant"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = cli.Run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := runCLI(t, args...)
	if code != cli.ExitOK {
		t.Fatalf("pgtenant %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func TestCLIDemoOnGivenDatabase(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	for _, iso := range []string{"schema", "table", "shared"} {
		out := mustCLI(t, "demo", "--dsn", dsn, "--isolation", iso, "--tenants", "3", "--messages", "10")
		for _, want := range []string{"demo-tenant-01", "demo-tenant-03", "isolation: ok", "BODIES", "deferred=5", "refused a write"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s demo output lacks %q:\n%s", iso, want, out)
			}
		}
	}
	// The demo cleans up after itself, so it runs again on the same
	// database, and leaves no tenants behind.
	mustCLI(t, "demo", "--dsn", dsn, "--tenants", "2", "--messages", "3")
	for _, iso := range []string{"schema", "table", "shared"} {
		if out := mustCLI(t, "tenants", "list", "--dsn", dsn, "--isolation", iso); out != "" {
			t.Errorf("%s: demo left tenants behind: %q", iso, out)
		}
	}
}

func TestCLIDemoStartsItsOwnContainer(t *testing.T) {
	pgtest.Container(t) // skips (or fails in CI) without Docker, like the rest
	t.Setenv("DATABASE_URL", "")
	out := mustCLI(t, "demo", "--tenants", "2", "--messages", "4")
	if !strings.Contains(out, "starting a disposable PostgreSQL") || !strings.Contains(out, "isolation: ok") {
		t.Fatalf("demo output:\n%s", out)
	}
}

func TestCLITenantCommands(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	if out := mustCLI(t, "tenants", "provision", "acme", "globex", "--dsn", dsn); out != "provisioned acme\nprovisioned globex\n" {
		t.Fatalf("provision: %q", out)
	}
	if out := mustCLI(t, "tenants", "list", "--dsn", dsn); out != "acme\nglobex\n" {
		t.Fatalf("list: %q", out)
	}
	out := mustCLI(t, "tenants", "stats", "acme", "--dsn", dsn)
	if !strings.Contains(out, "acme") || !strings.Contains(out, "t_acme.retryspool_data") {
		t.Fatalf("stats: %s", out)
	}
	if out := mustCLI(t, "tenants", "stats", "--dsn", dsn); !strings.Contains(out, "globex") {
		t.Fatalf("overview: %s", out)
	}
	mustCLI(t, "migrate", "--dsn", dsn)
	if out := mustCLI(t, "migrate", "--dsn", dsn); !strings.Contains(out, "0 migrated, 2 already current") {
		t.Fatalf("migrate: %s", out)
	}
	// Two old messages and a fresh one: purge takes the old ones.
	r := newHost(t, tenant.NewFactory(dsn).WithConnectionLimits(2, 0))
	acme := tenant.WithTenant(context.Background(), "acme")
	for _, id := range []string{"old-1", "old-2", "fresh"} {
		conformance.MustStore(t, r, acme, id, []byte(id))
	}
	pool := pgtest.NewPool(t, dsn, nil)
	if _, err := pool.Exec(context.Background(), `UPDATE t_acme.retryspool_data SET updated = now() - interval '2 hours' WHERE message_id LIKE 'old-%'`); err != nil {
		t.Fatal(err)
	}
	if out := mustCLI(t, "purge", "acme", "--older-than", "1h", "--dsn", dsn); out != "purged 2 messages of acme\n" {
		t.Fatalf("purge: %q", out)
	}
	conformance.MustRead(t, r, acme, "fresh", []byte("fresh"))
	if out := mustCLI(t, "tenants", "drop", "acme", "--dsn", dsn); out != "dropped acme\n" {
		t.Fatalf("drop: %q", out)
	}
	if out := mustCLI(t, "tenants", "list", "--dsn", dsn); out != "globex\n" {
		t.Fatalf("list after drop: %q", out)
	}
	if code, _, errOut := runCLI(t, "tenants", "stats", "acme", "--dsn", dsn); code != cli.ExitError || !strings.Contains(errOut, `no tenant "acme"`) {
		t.Fatalf("stats of a dropped tenant: exit %d, %s", code, errOut)
	}
	t.Setenv("DATABASE_URL", dsn) // the environment works like --dsn
	if out := mustCLI(t, "tenants", "list"); out != "globex\n" {
		t.Fatalf("list with DATABASE_URL: %q", out)
	}
}

func TestCLIErrors(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	dsn := pgtest.NewDatabase(t)
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"tenants", "list"}, cli.ExitUsage, "no database"},
		{[]string{"tenants", "provision", "--dsn", dsn}, cli.ExitUsage, "arg"},
		{[]string{"nonsense"}, cli.ExitUsage, "unknown command"},
		{[]string{"purge", "x", "--dsn", dsn}, cli.ExitUsage, "--older-than"},
		{[]string{"tenants", "list", "--dsn", dsn, "--isolation", "bogus"}, cli.ExitUsage, "isolation"},
		{[]string{"tenants", "provision", "bad id!", "--dsn", dsn}, cli.ExitUsage, "invalid tenant"},
		{[]string{"tenants", "stats", "bad id!", "--dsn", dsn}, cli.ExitUsage, "invalid tenant"},
		{[]string{"tenants", "list", "--dsn", dsn, "--table", "bad table"}, cli.ExitUsage, "bad table"},
		{[]string{"tenants", "frob", "--dsn", dsn}, cli.ExitUsage, `unknown command "frob"`},
		{[]string{"tenants", "--dsn", dsn}, cli.ExitUsage, "needs a command: "},
		{[]string{"tenants", "stats", "nobody", "--dsn", dsn}, cli.ExitError, `no tenant "nobody"`},
		{[]string{"bench", "--dsn", dsn, "--modes", "schema,bogus"}, cli.ExitUsage, `--modes "bogus"`},
		{[]string{"bench", "--dsn", dsn, "--chart", "out.jpg"}, cli.ExitUsage, ".png or .svg"},
		{[]string{"bench", "--dsn", dsn, "--affinity", "-1"}, cli.ExitUsage, "--affinity -1"},
		{[]string{"tenants", "list", "--dsn", "postgres://nobody@127.0.0.1:1/x?connect_timeout=2"}, cli.ExitError, "connect"},
	}
	for _, c := range cases {
		code, _, errOut := runCLI(t, c.args...)
		if code != c.code || !strings.Contains(errOut, c.msg) {
			t.Errorf("pgtenant %v: exit %d, stderr %q; want exit %d mentioning %q", c.args, code, errOut, c.code, c.msg)
		}
	}
	for _, args := range [][]string{{"--help"}, {"demo", "--help"}, {"tenants", "drop", "--help"}, {"migrate", "--help"}} {
		if code, out, _ := runCLI(t, args...); code != cli.ExitOK || !strings.Contains(out, "Usage:") {
			t.Errorf("pgtenant %v: exit %d\n%s", args, code, out)
		}
	}
}

func TestCLIBench(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	dir := t.TempDir()
	csvPath, pngPath, svgPath := dir+"/bench.csv", dir+"/bench.png", dir+"/bench.svg"
	out := mustCLI(t, "bench", "--dsn", dsn, "--tenants", "1,3", "--sizes", "100,5000", "--concurrency", "2",
		"--modes", "schema,shared", "--duration", "200ms", "--csv", csvPath, "--chart", pngPath)
	if !strings.Contains(out, "CYCLES/S") || strings.Count(out, "\n") != 1+2*2*2 {
		t.Fatalf("bench table:\n%s", out)
	}
	data, err := os.ReadFile(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	if err != nil || len(rows) != 1+8 || rows[0][4] != "cycles_per_s" {
		t.Fatalf("csv: %v\n%s", err, data)
	}
	for _, row := range rows[1:] {
		if v, err := strconv.ParseFloat(row[4], 64); err != nil || v <= 0 {
			t.Fatalf("csv row %v: no throughput", row)
		}
	}
	png, err := os.ReadFile(pngPath)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("chart is not a PNG: %v", err)
	}
	mustCLI(t, "bench", "--dsn", dsn, "--tenants", "1", "--modes", "table", "--duration", "100ms", "--chart", svgPath, "--affinity", "0")
	if svg, err := os.ReadFile(svgPath); err != nil || !bytes.Contains(svg, []byte("<svg")) {
		t.Fatalf("chart is not an SVG: %v", err)
	}
	if code, _, errOut := runCLI(t, "bench", "--dsn", dsn, "--sizes", "x"); code != cli.ExitUsage {
		t.Fatalf("bad --sizes: exit %d %s", code, errOut)
	}
	// The bench tenants are gone unless --keep.
	for _, iso := range []string{"schema", "table", "shared"} {
		if out := mustCLI(t, "tenants", "list", "--dsn", dsn, "--isolation", iso, "--table", "pgtenant_bench"); out != "" {
			t.Errorf("%s: bench left tenants behind: %q", iso, out)
		}
	}
	mustCLI(t, "bench", "--dsn", dsn, "--tenants", "2", "--modes", "shared", "--duration", "50ms", "--keep")
	if out := mustCLI(t, "tenants", "list", "--dsn", dsn, "--isolation", "shared", "--table", "pgtenant_bench"); out != "bench-00000\nbench-00001\n" {
		t.Errorf("bench --keep: tenants %q", out)
	}
}

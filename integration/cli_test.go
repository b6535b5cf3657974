package integration

import (
	"bytes"
	"context"
	"encoding/csv"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
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
	// The overview counts exactly (a few tenants) and prints sizes in
	// human units, or in bytes with --bytes.
	host := newHost(t, tenant.NewFactory(dsn).WithConnectionLimits(2, 0))
	conformance.MustStore(t, host, tenant.WithTenant(context.Background(), "globex"), "m", bytes.Repeat([]byte("g"), 3000))
	over := mustCLI(t, "tenants", "stats", "--dsn", dsn)
	if !regexp.MustCompile(`(?m)^globex +1 +2\.9 KiB +0 +\d+\.\d [KM]iB +t_globex\.retryspool_data$`).MatchString(over) || strings.Contains(over, "~") {
		t.Fatalf("overview:\n%s", over)
	}
	if over := mustCLI(t, "tenants", "stats", "--bytes", "--dsn", dsn); !regexp.MustCompile(`(?m)^globex +1 +3000 +0 +\d+ +t_globex`).MatchString(over) {
		t.Fatalf("overview --bytes:\n%s", over)
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
	t.Setenv("DATABASE_URL", "not a dsn")
	if code, _, errOut := runCLI(t, "tenants", "list"); code != cli.ExitUsage || !strings.Contains(errOut, "DATABASE_URL is not a PostgreSQL connection string") {
		t.Fatalf("list with a bad DATABASE_URL: exit %d, %s", code, errOut)
	}
	// An empty store says so, on stderr: stdout stays a list of ids.
	code, out, errOut := runCLI(t, "tenants", "list", "--isolation", "shared", "--dsn", dsn)
	if code != cli.ExitOK || out != "" || errOut != "no tenants (isolation shared, table retryspool_data)\n" {
		t.Fatalf("list of an empty store: exit %d, %q, %q", code, out, errOut)
	}
}

// TestCLIProvisionMany provisions tenants from a file and a range, more
// than are reported one per line: a progress bar, a summary, every tenant
// there once, and the overview past ExactOverview tenants marks its
// estimates.
func TestCLIProvisionMany(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	file := filepath.Join(t.TempDir(), "ids")
	if err := os.WriteFile(file, []byte("# new customers\nacme\n\nglobex\nt-007\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"tenants", "provision", "--isolation", "table", "--dsn", dsn, "--file", file, "--range", "t-001..t-100", "--concurrency", "6"}
	code, out, errOut := runCLI(t, args...)
	if code != cli.ExitOK || !regexp.MustCompile(`^provisioned 102 tenants in \S+ \(\d+/s\)\n$`).MatchString(out) ||
		!regexp.MustCompile(`^(provisioning: \d+/102\n){10}provisioning: 102/102\n$`).MatchString(errOut) {
		// Not a terminal: a line at every tenth, no bar redrawn.
		t.Fatalf("provision: exit %d\nstdout %q\nstderr %q", code, out, errOut)
	}
	list := strings.Fields(mustCLI(t, "tenants", "list", "--isolation", "table", "--dsn", dsn))
	if len(list) != 102 || list[0] != "acme" || list[2] != "t-001" || list[101] != "t-100" {
		t.Fatalf("list after provision: %d tenants, %v ...", len(list), list[:3])
	}
	over := mustCLI(t, "tenants", "stats", "--isolation", "table", "--dsn", dsn)
	if !regexp.MustCompile(`(?m)^t-100 +~\d+ +- +~\d+ +\d`).MatchString(over) || !strings.Contains(over, "~: the planner's estimate (more than 100 tenants") {
		t.Fatalf("overview past 100 tenants:\n%s", over)
	}
	// Again: idempotent, and dropped in one go with a summary.
	mustCLI(t, args...)
	ids := append([]string{"tenants", "drop", "--isolation", "table", "--dsn", dsn}, list...)
	if out := mustCLI(t, ids...); !strings.HasPrefix(out, "dropped 102 tenants in ") {
		t.Fatalf("drop: %q", out)
	}
}

func TestCLIErrors(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	dsn := pgtest.NewDatabase(t)
	mustCLI(t, "tenants", "provision", "gone", "--dsn", dsn)
	mustCLI(t, "tenants", "drop", "gone", "--dsn", dsn)
	base, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	wrong, noDB := *base, *base
	wrong.User = url.UserPassword(base.User.Username(), "wrong-password")
	noDB.Path = "/no_such_db"
	type cliCase struct {
		args []string
		code int
		msg  string
	}
	cases := []cliCase{
		{[]string{"tenants", "list"}, cli.ExitUsage, "no database"},
		{[]string{"tenants", "provision", "--dsn", dsn}, cli.ExitUsage, "no tenants: give ids"},
		{[]string{"nonsense"}, cli.ExitUsage, "unknown command"},
		{[]string{"purge", "x", "--dsn", dsn}, cli.ExitUsage, "--older-than"},
		{[]string{"tenants", "list", "--dsn", dsn, "--isolation", "bogus"}, cli.ExitUsage, "isolation"},
		{[]string{"tenants", "list", "--dsn", dsn, "--table", "bad table"}, cli.ExitUsage, "bad table"},
		{[]string{"tenants", "frob", "--dsn", dsn}, cli.ExitUsage, `unknown command "frob"`},
		{[]string{"tenants", "--dsn", dsn}, cli.ExitUsage, "needs a command: "},
		{[]string{"tenants", "provision", "--range", "a-1..b-2", "--dsn", dsn}, cli.ExitUsage, "same prefix"},
		{[]string{"tenants", "provision", "--file", "/no/such/file", "--dsn", dsn}, cli.ExitUsage, "--file"},
		{[]string{"bench", "--dsn", dsn, "--modes", "schema,bogus"}, cli.ExitUsage, `--modes "bogus"`},
		{[]string{"bench", "--dsn", dsn, "--tenants", "0"}, cli.ExitUsage, `--tenants "0"`},
		{[]string{"bench", "--dsn", dsn, "--sizes", "x"}, cli.ExitUsage, `--sizes "x"`},
		{[]string{"bench", "--dsn", dsn, "--chart", "out.jpg"}, cli.ExitUsage, ".png or .svg"},
		{[]string{"bench", "--dsn", dsn, "--affinity", "-2"}, cli.ExitUsage, "--affinity -2"},
		// A connection string that does not parse is a usage error; one
		// that names an unreachable server is one clear sentence.
		{[]string{"tenants", "list", "--dsn", "not a dsn"}, cli.ExitUsage, "--dsn is not a PostgreSQL connection string"},
		{[]string{"demo", "--dsn", "not a dsn"}, cli.ExitUsage, "--dsn is not a PostgreSQL connection string"},
		{[]string{"tenants", "list", "--dsn", "postgres://nobody@127.0.0.1:1/x?connect_timeout=2"}, cli.ExitError,
			`pgtenant: cannot connect to PostgreSQL at 127.0.0.1:1 (database "x", user "nobody"): connection refused; check that the server runs`},
		{[]string{"tenants", "list", "--dsn", wrong.String()}, cli.ExitError, "password authentication failed"},
		{[]string{"tenants", "list", "--dsn", noDB.String()}, cli.ExitError, `(database "no_such_db", user`},
	}
	// Every subcommand that takes tenant ids, with a bad id, an id never
	// provisioned and a dropped one.
	for _, cmd := range [][]string{{"tenants", "provision"}, {"tenants", "drop"}, {"tenants", "stats"}, {"purge", "--older-than", "1h"}} {
		cases = append(cases, cliCase{append(slices.Clone(cmd), "bad id!", "--dsn", dsn), cli.ExitUsage, "invalid tenant"})
		if cmd[1] == "stats" || cmd[0] == "purge" {
			cases = append(cases,
				cliCase{append(slices.Clone(cmd), "nobody", "--dsn", dsn), cli.ExitError, `no tenant "nobody" in this store (never provisioned)`},
				cliCase{append(slices.Clone(cmd), "gone", "--dsn", dsn), cli.ExitError, `no tenant "gone" in this store: it was dropped`})
		}
	}
	for _, c := range cases {
		code, _, errOut := runCLI(t, c.args...)
		if code != c.code || !strings.Contains(errOut, c.msg) {
			t.Errorf("pgtenant %v: exit %d, stderr %q; want exit %d mentioning %q", c.args, code, errOut, c.code, c.msg)
		}
		if strings.Count(errOut, "pgtenant:") > 1 {
			t.Errorf("pgtenant %v: a doubled prefix: %q", c.args, errOut)
		}
	}
	// drop is idempotent and says what it found; provision brings a
	// dropped tenant back.
	if code, out, _ := runCLI(t, "tenants", "drop", "nobody", "gone", "--dsn", dsn); code != cli.ExitOK ||
		out != "no tenant \"nobody\" (nothing to drop)\ngone was already dropped\n" {
		t.Errorf("drop of an absent and a dropped tenant: exit %d, %q", code, out)
	}
	if out := mustCLI(t, "tenants", "provision", "gone", "--dsn", dsn); out != "provisioned gone\n" {
		t.Errorf("provision of a dropped tenant: %q", out)
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

package ddl

import (
	"regexp"
	"strings"
	"testing"

	"github.com/pgtenant/pgtenant/schema"
)

// TestMigrationsEndAtCurrentVersion ties schema.CurrentVersion to the list
// of migrations: versions climb by one from 2, and the last one is current.
func TestMigrationsEndAtCurrentVersion(t *testing.T) {
	want := 2
	for _, m := range migrations {
		if m.version != want {
			t.Fatalf("migration %q has version %d, want %d", m.name, m.version, want)
		}
		want++
	}
	if last := want - 1; last != schema.CurrentVersion {
		t.Fatalf("the migrations end at version %d, schema.CurrentVersion is %d", last, schema.CurrentVersion)
	}
}

func TestIndexNames(t *testing.T) {
	if got := IndexName(schema.Table{Schema: "queue", Name: "data"}, "created"); got != "idx_data_created" {
		t.Errorf("IndexName = %s", got)
	}
	long := schema.Table{Schema: "public", Name: strings.Repeat("n", 60)}
	c, u := IndexName(long, "created"), IndexName(long, "updated")
	if len(c) > schema.MaxIdentifierLength || len(u) > schema.MaxIdentifierLength || c == u {
		t.Errorf("long index names %q (%d) %q (%d)", c, len(c), u, len(u))
	}
}

// unqualified matches a type or function name that resolves through
// search_path when written without pg_catalog.
var unqualified = regexp.MustCompile(`(?i)(^|[^._a-z])(text|bytea|timestamptz|now\(|count\(|sum\(|to_regclass)`)

func TestStatementsAreQualified(t *testing.T) {
	tb := schema.Table{Schema: "s", Name: "t"}
	var stmts []string
	stmts = append(stmts, Table(tb, true)...)
	stmts = append(stmts, Table(tb, false)...)
	stmts = append(stmts, Shared(tb)...)
	for _, s := range stmts {
		if m := unqualified.FindString(s); m != "" {
			t.Errorf("unqualified %q in %s", m, s)
		}
	}
}

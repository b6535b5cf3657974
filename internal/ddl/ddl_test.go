package ddl

import (
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

// TestStepsAreIdempotent checks that every migration step is safe to run
// again (Objects runs them all for a tenant created at the current
// version): each statement creates IF NOT EXISTS, sets storage
// parameters, or belongs to a step with a Done check.
func TestStepsAreIdempotent(t *testing.T) {
	tb := schema.Table{Schema: "s", Name: "t"}
	for _, shared := range []bool{false, true} {
		for _, st := range Migrate(0, tb, shared) {
			if st.Done != "" {
				continue
			}
			for _, sql := range st.SQL {
				if !strings.Contains(sql, "IF NOT EXISTS") && !strings.Contains(sql, " SET (") {
					t.Errorf("unchecked step statement is not idempotent: %s", sql)
				}
			}
		}
	}
}

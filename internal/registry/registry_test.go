package registry

import (
	"strings"
	"testing"

	"github.com/pgtenant/pgtenant/internal/ddl"
	"github.com/pgtenant/pgtenant/schema"
)

// TestStatementsAreQualified builds the registry's statement texts and
// checks that upserts take their values from EXCLUDED (Citus refuses
// non-immutable functions in DO UPDATE SET) and that no operator or common
// function is left to the search_path.
func TestStatementsAreQualified(t *testing.T) {
	texts := append(ddlStatements(), ReadGuard(1), WriteGuard(1), UsageLockSQL, UsageSetSQL, UsageAddSQL)
	for _, sql := range texts {
		for _, bare := range []string{" = ", " <> ", " + ", " now(", " count(", " sum(", " IN ("} {
			if strings.Contains(ddl.WithoutAssignments(sql), bare) {
				t.Errorf("unqualified %q in %s", bare, sql)
			}
		}
	}
	l, err := schema.NewLayout(schema.SharedTable, "retryspool_data", "public")
	if err != nil {
		t.Fatal(err)
	}
	_ = New(nil, l, 0) // the statements below are built per call; see registry.go's put
	if !strings.Contains(putSQL(true), "updated = EXCLUDED.updated") || strings.Contains(strings.SplitN(putSQL(true), "DO UPDATE SET", 2)[1], "(") {
		t.Errorf("the registry upsert computes values in DO UPDATE SET: %s", putSQL(true))
	}
}

package engine

import (
	"strings"
	"testing"

	"github.com/pgtenant/pgtenant/internal/ddl"
	"github.com/pgtenant/pgtenant/schema"
)

// TestUpsertsAreCitusCompatible checks every upsert the engine builds:
// its DO UPDATE SET clause takes values from EXCLUDED only, never a
// function (Citus refuses non-immutable functions there), and every
// operator and function is qualified.
func TestUpsertsAreCitusCompatible(t *testing.T) {
	guard := &Guard{Read: func(int) string { return "true" }, Write: func(int) string { return "true" }}
	for _, target := range []Target{
		{Table: schema.Table{Schema: "s", Name: "t"}},
		{Table: schema.Table{Schema: "s", Name: "t"}, Partition: "acme", Guard: guard},
	} {
		s, err := NewStore(nil, target, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, sql := range []string{s.upsertSQL, s.chunkedUpsertSQL} {
			_, set, ok := strings.Cut(sql, "DO UPDATE SET")
			if !ok {
				t.Fatalf("no upsert: %s", sql)
			}
			if strings.Contains(set, "(") {
				t.Errorf("DO UPDATE SET calls a function: %s", set)
			}
		}
		for _, sql := range []string{s.upsertSQL, s.chunkedUpsertSQL, s.getSQL, s.deleteSQL, s.purgeSQL, s.statsSQL,
			s.countSQL, s.sizeSQL, s.chunkCleanSQL, s.chunkScanSQL, s.chunkInsertSQL} {
			for _, bare := range []string{" = ", " <> ", " < ", " now(", " count(", " sum(", " min(", " max(", " IN ("} {
				if strings.Contains(ddl.WithoutAssignments(sql), bare) {
					t.Errorf("unqualified %q in %s", bare, sql)
				}
			}
		}
	}
}

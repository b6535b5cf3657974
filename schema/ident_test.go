package schema

import (
	"errors"
	"strings"
	"testing"
)

func TestParseTable(t *testing.T) {
	cases := map[string]Table{
		"retryspool_data": {"public", "retryspool_data"},
		"queue.data":      {"queue", "data"},
		"Queue.Data_1":    {"queue", "data_1"},
		"_x":              {"public", "_x"},
	}
	for in, want := range cases {
		got, err := ParseTable(in, "public")
		if err != nil || got != want {
			t.Errorf("ParseTable(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "a.", ".a", "a.b.c", "1a", "a b", `a"b`, "a;b", "pg_toast.x", strings.Repeat("a", 64), "é"} {
		if _, err := ParseTable(in, "public"); !errors.Is(err, ErrInvalidName) {
			t.Errorf("ParseTable(%q) = %v, want ErrInvalidName", in, err)
		}
	}
}

func TestSanitizeAndIndexNames(t *testing.T) {
	tb := Table{"queue", "data"}
	if got := tb.Sanitize(); got != `"queue"."data"` {
		t.Errorf("Sanitize = %s", got)
	}
	if got := tb.IndexName("created"); got != "idx_data_created" {
		t.Errorf("IndexName = %s", got)
	}
	long := Table{"public", strings.Repeat("n", 60)}
	c, u := long.IndexName("created"), long.IndexName("updated")
	if len(c) > MaxIdentifierLength || len(u) > MaxIdentifierLength || c == u {
		t.Errorf("long index names %q (%d) %q (%d)", c, len(c), u, len(u))
	}
}

func TestLayoutPlace(t *testing.T) {
	base := Table{"public", "retryspool_data"}
	p, err := Layout{SchemaPerTenant, base}.Place("acme")
	if err != nil || p.Table != (Table{"t_acme", "retryspool_data"}) || !p.OwnSchema || p.Partition != "" {
		t.Errorf("SchemaPerTenant: %+v %v", p, err)
	}
	p, err = Layout{TablePerTenant, base}.Place("acme")
	if err != nil || p.Table != (Table{"public", "t_acme"}) || p.OwnSchema {
		t.Errorf("TablePerTenant: %+v %v", p, err)
	}
	p, err = Layout{SharedTable, base}.Place("Acme")
	if err != nil || p.Table != base || p.Partition != "Acme" {
		t.Errorf("SharedTable: %+v %v", p, err)
	}
	for _, mode := range []Isolation{SchemaPerTenant, TablePerTenant, SharedTable} {
		if _, err := (Layout{mode, base}).Place("bad id"); !errors.Is(err, ErrInvalidTenant) {
			t.Errorf("%v: bad id accepted: %v", mode, err)
		}
	}
}

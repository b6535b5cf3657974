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
		"tx.datat_":       {"tx", "datat_"},
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

// TestOperatorNamesNeverMeetDerivedNames covers the collisions an operator
// could otherwise configure: a name with a derived prefix, and the
// registry's schema.
func TestOperatorNamesNeverMeetDerivedNames(t *testing.T) {
	for _, in := range []string{
		"t_spool",          // a TablePerTenant tenant's table ("spool")
		"public.t_spool",   // the same, qualified
		"c_x",              // another layout's chunk table
		"M_x",              // a metadata table, folded to m_x
		"h_acme_abc",       // a hashed tenant name
		"t_acme.data",      // a SchemaPerTenant tenant's schema
		"pgtenant.tenants", // the registry
		"PgTenant.other",   // the registry's schema, folded
	} {
		if _, err := ParseTable(in, "public"); !errors.Is(err, ErrInvalidName) {
			t.Errorf("ParseTable(%q) = %v, want ErrInvalidName", in, err)
		}
	}
	for _, s := range []string{"t_acme", "pgtenant", "c_x", "pg_catalog"} {
		if _, err := ParseSchemaName(s); !errors.Is(err, ErrInvalidName) {
			t.Errorf("ParseSchemaName(%q) = %v, want ErrInvalidName", s, err)
		}
	}
}

func TestSanitizeAndDerivedNames(t *testing.T) {
	tb := Table{"queue", "data"}
	if got := tb.Sanitize(); got != `"queue"."data"` {
		t.Errorf("Sanitize = %s", got)
	}
	if got := tb.Chunks(); got != (Table{"queue", "c_data"}) {
		t.Errorf("Chunks = %v", got)
	}
	if got := tb.Meta(); got != (Table{"queue", "m_data"}) {
		t.Errorf("Meta = %v", got)
	}
	long := Table{"public", strings.Repeat("n", 62)}
	longer := Table{"public", strings.Repeat("n", 63)}
	for _, d := range []Table{long.Chunks(), long.Meta(), longer.Chunks()} {
		if len(d.Name) > MaxIdentifierLength {
			t.Errorf("derived name %q has %d bytes", d.Name, len(d.Name))
		}
	}
	if long.Chunks() == longer.Chunks() || long.Chunks() == long.Meta() {
		t.Errorf("derived names meet: %v %v %v", long.Chunks(), longer.Chunks(), long.Meta())
	}
}

func TestLayoutPlace(t *testing.T) {
	l, err := NewLayout(SchemaPerTenant, "retryspool_data", "public")
	if err != nil {
		t.Fatal(err)
	}
	p, err := l.Place("acme")
	if err != nil || p.Table != (Table{"t_acme", "retryspool_data"}) || !p.OwnSchema() || p.Shared() {
		t.Errorf("SchemaPerTenant: %+v %v", p, err)
	}
	l, _ = NewLayout(TablePerTenant, "retryspool_data", "queues")
	p, err = l.Place("acme")
	if err != nil || p.Table != (Table{"queues", "t_acme"}) || p.OwnSchema() {
		t.Errorf("TablePerTenant: %+v %v", p, err)
	}
	l, _ = NewLayout(SharedTable, "q.retryspool_data", "ignored")
	p, err = l.Place("Acme")
	if err != nil || p.Table != (Table{"q", "retryspool_data"}) || p.Partition != "Acme" || !p.Shared() {
		t.Errorf("SharedTable: %+v %v", p, err)
	}
	for _, mode := range []Isolation{SchemaPerTenant, TablePerTenant, SharedTable} {
		l, _ := NewLayout(mode, "data", "public")
		if _, err := l.Place("bad id"); !errors.Is(err, ErrInvalidTenant) {
			t.Errorf("%v: bad id accepted: %v", mode, err)
		}
	}
}

func TestNewLayoutRefusesCollisions(t *testing.T) {
	cases := []struct {
		mode               Isolation
		table, tableSchema string
	}{
		{SharedTable, "t_spool", "public"},          // (a) the TablePerTenant tenant "spool"
		{SchemaPerTenant, "c_x", "public"},          // (b) layout x's chunk table
		{SchemaPerTenant, "t_x", "public"},          // (c) TablePerTenant tenant x in schema t_acme
		{TablePerTenant, "data", "t_acme"},          // (c) SchemaPerTenant tenant acme's schema
		{SharedTable, "pgtenant.tenants", "public"}, // (d) the registry
		{SchemaPerTenant, "queue.data", "public"},   // a schema in SchemaPerTenant
		{TablePerTenant, "data", "pg_temp"},
		{Isolation(7), "data", "public"},
	}
	for _, c := range cases {
		if _, err := NewLayout(c.mode, c.table, c.tableSchema); err == nil {
			t.Errorf("NewLayout(%v, %q, %q) accepted", c.mode, c.table, c.tableSchema)
		}
	}
	for _, mode := range []Isolation{SchemaPerTenant, TablePerTenant, SharedTable} {
		if _, err := NewLayout(mode, "retryspool_data", "public"); err != nil {
			t.Errorf("NewLayout(%v) with the defaults: %v", mode, err)
		}
	}
}

func TestParseIsolation(t *testing.T) {
	for _, mode := range []Isolation{SchemaPerTenant, TablePerTenant, SharedTable} {
		for _, s := range []string{mode.String(), mode.short()} {
			if got, err := ParseIsolation(s); err != nil || got != mode {
				t.Errorf("ParseIsolation(%q) = %v, %v", s, got, err)
			}
		}
	}
	if _, err := ParseIsolation("bogus"); err == nil {
		t.Error("ParseIsolation(bogus) accepted")
	}
}

package stmt

import (
	"slices"
	"strings"
	"testing"
)

type vals struct {
	ID   string
	Size int64
}

var fields = Fields[vals]{
	"id":   func(v *vals) any { return v.ID },
	"size": func(v *vals) any { return v.Size },
}

func TestCompile(t *testing.T) {
	s, err := Compile(`SELECT '@x {y}', "we@ird" FROM {t} WHERE id = @id AND size > @size AND {cond}`,
		map[string]string{"t": `"s"."t"`, "cond": "@id::text <> ''"}, fields)
	if err != nil {
		t.Fatal(err)
	}
	want := `SELECT '@x {y}', "we@ird" FROM "s"."t" WHERE id = $1 AND size > $2 AND $1::text <> ''`
	if s.SQL != want {
		t.Fatalf("SQL\n got %s\nwant %s", s.SQL, want)
	}
	if !slices.Equal(s.Params, []string{"id", "size"}) {
		t.Fatalf("params %v", s.Params)
	}
	args := s.Args("mode", &vals{ID: "m", Size: 3})
	if len(args) != 3 || args[0] != "mode" || args[1] != "m" || args[2] != int64(3) {
		t.Fatalf("args %v", args)
	}
	if got := s.Args(nil, &vals{}); len(got) != 2 {
		t.Fatalf("args without a first: %v", got)
	}
}

func TestCompileErrors(t *testing.T) {
	for _, text := range []string{
		"SELECT @nope",     // no field
		"SELECT {missing}", // no part
		"SELECT {t",        // unterminated hole
		"SELECT 'x",        // unterminated quote
		"SELECT @ + 1",     // empty name
		"SELECT {loop}",    // parts that never end
	} {
		if _, err := Compile(text, map[string]string{"t": "x", "loop": "{loop}"}, fields); err == nil {
			t.Errorf("Compile(%q) succeeded", text)
		} else if !strings.HasPrefix(err.Error(), "stmt: ") {
			t.Errorf("Compile(%q): %v", text, err)
		}
	}
}

func TestCastsAreNotHoles(t *testing.T) {
	s, err := Compile("SELECT @id::VARCHAR, now()::pg_catalog.text", nil, fields)
	if err != nil {
		t.Fatal(err)
	}
	if s.SQL != "SELECT $1::VARCHAR, now()::pg_catalog.text" {
		t.Fatal(s.SQL)
	}
}

package integration

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pgtenant/pgtenant/schema"
)

// docs are the README and the pages of docs/, with their text.
func docs(t *testing.T) map[string]string {
	t.Helper()
	paths, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range append(paths, "../README.md") {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimPrefix(p, "../")] = string(b)
	}
	return out
}

// TestReadmeCodeIsTested checks that every Go block of the README and of
// docs/ appears, line for line (white space aside), in an Example
// function, which go test compiles and runs against PostgreSQL. A block
// that drifts from its Example fails here.
func TestReadmeCodeIsTested(t *testing.T) {
	t.Parallel()
	var blocks [][]string
	for _, text := range docs(t) {
		blocks = append(blocks, regexp.MustCompile("(?s)```go\n(.*?)```").FindAllStringSubmatch(text, -1)...)
	}
	if len(blocks) < 5 {
		t.Fatalf("found %d Go blocks in the README and docs; the pattern is wrong", len(blocks))
	}
	examples := exampleBodies(t)
	if len(examples) < 5 {
		t.Fatalf("found %d Example functions", len(examples))
	}
	for _, b := range blocks {
		lines := codeLines(b[1])
		found := false
		for _, ex := range examples {
			if containsRun(ex.lines, lines) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("a Go block of the docs is in no Example function (make it one, or copy its code):\n%s", b[1])
		}
	}
}

type example struct {
	name  string
	lines []string
}

// exampleBodies parses the Example functions of the module's test files.
func exampleBodies(t *testing.T) []example {
	t.Helper()
	var out []example
	err := filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, src, parser.ParseComments)
		if err != nil {
			return err
		}
		for _, d := range f.Decls {
			if fn, ok := d.(*ast.FuncDecl); ok && strings.HasPrefix(fn.Name.Name, "Example") && fn.Body != nil {
				body := src[fset.Position(fn.Body.Lbrace).Offset+1 : fset.Position(fn.Body.Rbrace).Offset]
				out = append(out, example{fn.Name.Name, codeLines(string(body))})
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var spaces = regexp.MustCompile(`\s+`)

// codeLines gives the lines of code with white space collapsed, leaving
// out blank lines and imports (an Example's are at the top of its file).
func codeLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(spaces.ReplaceAllString(l, " "))
		if l == "" || strings.HasPrefix(l, "import ") {
			continue
		}
		out = append(out, l)
	}
	return out
}

// containsRun reports whether run occurs in lines as consecutive lines.
func containsRun(lines, run []string) bool {
	for i := range lines {
		if i+len(run) <= len(lines) && slices.Equal(lines[i:i+len(run)], run) {
			return true
		}
	}
	return false
}

// TestDocsLinksResolve checks that every link of the README and docs/ to a
// heading (#anchor, page.md#anchor) or a page names one that exists.
func TestDocsLinksResolve(t *testing.T) {
	t.Parallel()
	all := docs(t)
	anchors := map[string]map[string]bool{}
	for name, text := range all {
		anchors[name] = map[string]bool{}
		for _, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(l, "#") {
				anchors[name][anchor(strings.TrimLeft(l, "#"))] = true
			}
		}
	}
	link := regexp.MustCompile(`\]\(([a-z./]*\.md)?(#[a-z0-9_-]+)?\)`)
	for name, text := range all {
		for _, m := range link.FindAllStringSubmatch(text, -1) {
			page, frag := name, strings.TrimPrefix(m[2], "#")
			if m[1] != "" {
				page = filepath.ToSlash(filepath.Clean(filepath.Join(filepath.Dir(name), m[1])))
			}
			a, ok := anchors[page]
			if !ok {
				t.Errorf("%s links to %s, which does not exist", name, m[0])
				continue
			}
			if frag != "" && !a[frag] {
				t.Errorf("%s links to %s: no such heading in %s", name, m[0], page)
			}
		}
	}
}

// anchor is GitHub's anchor of a heading.
func anchor(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	h = regexp.MustCompile(`[^\w\- ]`).ReplaceAllString(h, "")
	return strings.ReplaceAll(h, " ", "-")
}

// TestDocsStateTheSchemaVersion keeps the docs' statement of the current
// schema version in step with schema.CurrentVersion.
func TestDocsStateTheSchemaVersion(t *testing.T) {
	t.Parallel()
	want := fmt.Sprintf("`schema.CurrentVersion`, now %d", schema.CurrentVersion)
	found := false
	for name, text := range docs(t) {
		if strings.Contains(text, "`schema.CurrentVersion`, now") {
			found = true
			if !strings.Contains(text, want) {
				t.Errorf("%s states another schema version than %d", name, schema.CurrentVersion)
			}
		}
	}
	if !found {
		t.Error("no page states the current schema version")
	}
}

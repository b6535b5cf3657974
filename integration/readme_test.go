package integration

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestReadmeCodeIsTested checks that every Go block of the README appears,
// line for line (white space aside), in an Example function, which go test
// compiles and runs against PostgreSQL. A block that drifts from its
// Example fails here.
func TestReadmeCodeIsTested(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```go\n(.*?)```").FindAllStringSubmatch(string(readme), -1)
	if len(blocks) < 5 {
		t.Fatalf("found %d Go blocks in the README; the pattern is wrong", len(blocks))
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
			t.Errorf("README block is in no Example function (make it one, or copy its code):\n%s", b[1])
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

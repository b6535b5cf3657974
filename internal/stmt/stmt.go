package stmt

import (
	"fmt"
	"strconv"
	"strings"
)

// Fields names the fields of a values struct V that statements bind:
// @name in a template binds Fields[name].
type Fields[V any] map[string]func(*V) any

// Stmt is one compiled statement.
type Stmt[V any] struct {
	// SQL is the text the server receives: parts filled in, parameters
	// numbered.
	SQL string
	// Params are the parameters' names, by position ($1 first).
	Params []string
	get    []func(*V) any
}

// Compile fills text's {part} holes from parts and numbers its @name
// parameters, binding each to fields[name]. A hole without a part or a
// parameter without a field is an error.
func Compile[V any](text string, parts map[string]string, fields Fields[V]) (Stmt[V], error) {
	filled, err := fill(text, parts)
	if err != nil {
		return Stmt[V]{}, err
	}
	var (
		s   Stmt[V]
		b   strings.Builder
		pos = map[string]int{}
	)
	err = scan(filled, '@', func(name string) (string, error) {
		if n, ok := pos[name]; ok {
			return "$" + strconv.Itoa(n), nil
		}
		get, ok := fields[name]
		if !ok {
			return "", fmt.Errorf("stmt: no field for parameter @%s", name)
		}
		s.Params = append(s.Params, name)
		s.get = append(s.get, get)
		pos[name] = len(s.Params)
		return "$" + strconv.Itoa(len(s.Params)), nil
	}, &b)
	if err != nil {
		return Stmt[V]{}, err
	}
	s.SQL = b.String()
	return s, nil
}

// fill replaces text's {part} holes; parts may hold @parameters and
// further holes of their own.
func fill(text string, parts map[string]string) (string, error) {
	for range 8 { // parts nest a few levels at most
		if !strings.ContainsRune(text, '{') {
			return text, nil
		}
		var b strings.Builder
		changed := false
		err := scan(text, '{', func(name string) (string, error) {
			p, ok := parts[name]
			if !ok {
				return "", fmt.Errorf("stmt: no part {%s}", name)
			}
			changed = true
			return p, nil
		}, &b)
		if err != nil {
			return "", err
		}
		text = b.String()
		if !changed {
			return text, nil
		}
	}
	return "", fmt.Errorf("stmt: parts nest too deeply")
}

// scan copies text to b, replacing each hole that starts with mark
// ('@name' or '{name}') outside quotes by what repl returns.
func scan(text string, mark byte, repl func(name string) (string, error), b *strings.Builder) error {
	for i := 0; i < len(text); {
		c := text[i]
		switch {
		case c == '\'' || c == '"':
			j := strings.IndexByte(text[i+1:], c)
			if j < 0 {
				return fmt.Errorf("stmt: unterminated %c in %q", c, text)
			}
			b.WriteString(text[i : i+j+2])
			i += j + 2
			continue
		case c == ':' && i+1 < len(text) && text[i+1] == ':': // a cast, never a hole
			b.WriteString("::")
			i += 2
			continue
		case c == mark:
			j := i + 1
			for j < len(text) && isNameByte(text[j]) {
				j++
			}
			name := text[i+1 : j]
			if name == "" {
				return fmt.Errorf("stmt: %c without a name in %q", mark, text)
			}
			if mark == '{' {
				if j >= len(text) || text[j] != '}' {
					return fmt.Errorf("stmt: {%s without } in %q", name, text)
				}
				j++
			}
			r, err := repl(name)
			if err != nil {
				return err
			}
			b.WriteString(r)
			i = j
			continue
		}
		b.WriteByte(c)
		i++
	}
	return nil
}

func isNameByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// Args returns the statement's arguments for values v: first, if not
// nil (pgx takes an exec mode there), then one per parameter, in order.
func (s *Stmt[V]) Args(first any, v *V) []any {
	a := make([]any, 0, 1+len(s.get))
	if first != nil {
		a = append(a, first)
	}
	for _, get := range s.get {
		a = append(a, get(v))
	}
	return a
}

// Must is Compile for templates fixed at compile time (package-level
// statements, like regexp.MustCompile): an error is a bug in the template,
// found by the package's tests, so it panics.
func Must[V any](text string, parts map[string]string, fields Fields[V]) Stmt[V] {
	s, err := Compile(text, parts, fields)
	if err != nil {
		panic(err)
	}
	return s
}

// Named is a compiled statement's text with a name, for listings such as
// the golden files of every statement.
type Named struct {
	Name   string
	SQL    string
	Params []string
}

// Named returns s as a Named statement.
func (s Stmt[V]) Named(name string) Named { return Named{Name: name, SQL: s.SQL, Params: s.Params} }

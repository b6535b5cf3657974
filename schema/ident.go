package schema

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// MaxIdentifierLength is PostgreSQL's limit on identifiers, in bytes
// (NAMEDATALEN-1). Longer names are silently truncated by the server, so
// pgtenant never produces or accepts one.
const MaxIdentifierLength = 63

// ErrInvalidName reports a table or schema name that pgtenant will not use.
var ErrInvalidName = errors.New("pgtenant: invalid table or schema name")

// Table is a schema-qualified table name. Both parts are valid, lower-case
// identifiers; use Sanitize to put it into SQL.
type Table struct {
	Schema string
	Name   string
}

// ParseTable validates a table name given as "table" or "schema.table" and
// returns it qualified, with defaultSchema used when the name has no schema.
//
// Each part must be 1 to 63 bytes of ASCII letters, digits and underscores,
// not starting with a digit; letters are folded to lower case, exactly as
// PostgreSQL folds the unquoted names that RetrySpool's original backend
// used, so existing tables are found. Schemas starting with "pg_" are
// reserved by PostgreSQL and rejected.
func ParseTable(name, defaultSchema string) (Table, error) {
	schemaName, tableName, found := strings.Cut(name, ".")
	if !found {
		schemaName, tableName = defaultSchema, name
	}
	s, err := ParseSchemaName(schemaName)
	if err != nil {
		return Table{}, err
	}
	t, err := parseIdent(tableName)
	if err != nil {
		return Table{}, fmt.Errorf("%w: table %q: %v", ErrInvalidName, tableName, err)
	}
	return Table{Schema: s, Name: t}, nil
}

// ParseSchemaName validates a schema name with the rules of ParseTable.
func ParseSchemaName(name string) (string, error) {
	s, err := parseIdent(name)
	if err != nil {
		return "", fmt.Errorf("%w: schema %q: %v", ErrInvalidName, name, err)
	}
	if strings.HasPrefix(s, "pg_") {
		return "", fmt.Errorf("%w: schema %q: the pg_ prefix is reserved", ErrInvalidName, name)
	}
	return s, nil
}

func parseIdent(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty")
	}
	if len(s) > MaxIdentifierLength {
		return "", fmt.Errorf("longer than %d bytes", MaxIdentifierLength)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return "", fmt.Errorf("byte %d (%q) not allowed: use letters, digits and _", i, c)
		}
	}
	return strings.ToLower(s), nil
}

// Sanitize returns the quoted, qualified name, ready for SQL.
func (t Table) Sanitize() string {
	return pgx.Identifier{t.Schema, t.Name}.Sanitize()
}

// String returns schema.table, unquoted, for messages and logs.
func (t Table) String() string { return t.Schema + "." + t.Name }

// IndexName returns the name of the index on column: idx_<table>_<column>,
// as RetrySpool's original backend named it, or, when that would exceed 63
// bytes, a shortened form ending in a hash of the full name so that the
// indexes of one table never share a name.
func (t Table) IndexName(column string) string {
	name := "idx_" + t.Name + "_" + column
	if len(name) <= MaxIdentifierLength {
		return name
	}
	h := hashName(name)[:12]
	return name[:MaxIdentifierLength-len(h)-1] + "_" + h
}

// Quote returns one quoted identifier.
func Quote(ident string) string { return pgx.Identifier{ident}.Sanitize() }

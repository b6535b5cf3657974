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

// ErrInvalidName reports a table or schema name that pgtenant will not use:
// malformed, reserved by PostgreSQL, or one that could collide with a name
// pgtenant derives (see ParseTable).
var ErrInvalidName = errors.New("pgtenant: invalid table or schema name")

// RegistrySchema is the schema pgtenant owns for its tenant registry. No
// table or schema chosen by an operator may use it.
const RegistrySchema = "pgtenant"

// TenantColumn is the column that holds the tenant id in a shared table.
const TenantColumn = "tenant_id"

// Derived names start with one of these prefixes: tenants' schemas and
// tables ("t_", "h_"), chunk tables ("c_"), metadata tables ("m_") and the
// tenant-state tables of shared tables ("s_"). Names chosen by an operator
// may not, so the two never meet.
var reservedPrefixes = []string{"t_", "h_", "c_", "m_", "s_"}

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
// used, so existing tables are found. Refused, so that an operator's choice
// can never collide with a name pgtenant derives or owns: schemas starting
// with "pg_" (PostgreSQL's), the registry's schema "pgtenant", and schemas or
// tables starting with "t_", "h_", "c_", "m_" or "s_" (tenants' schemas and tables,
// chunk, metadata and tenant-state tables).
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
	if p := reservedPrefix(t); p != "" {
		return Table{}, fmt.Errorf("%w: table %q: the %s prefix is reserved for names pgtenant derives", ErrInvalidName, tableName, p)
	}
	return Table{Schema: s, Name: t}, nil
}

// ParseSchemaName validates a schema name with the rules of ParseTable.
func ParseSchemaName(name string) (string, error) {
	s, err := parseIdent(name)
	if err != nil {
		return "", fmt.Errorf("%w: schema %q: %v", ErrInvalidName, name, err)
	}
	switch {
	case strings.HasPrefix(s, "pg_"):
		return "", fmt.Errorf("%w: schema %q: the pg_ prefix is reserved by PostgreSQL", ErrInvalidName, name)
	case s == RegistrySchema:
		return "", fmt.Errorf("%w: schema %q holds pgtenant's registry", ErrInvalidName, name)
	case reservedPrefix(s) != "":
		return "", fmt.Errorf("%w: schema %q: the %s prefix is reserved for names pgtenant derives", ErrInvalidName, name, reservedPrefix(s))
	}
	return s, nil
}

func reservedPrefix(s string) string {
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(s, p) {
			return p
		}
	}
	return ""
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

// Chunks returns the table that holds the pieces of t's large bodies:
// "c_" + t's name, in t's schema.
func (t Table) Chunks() Table { return t.derived("c_") }

// Meta returns the table that holds the RetrySpool metadata of t's
// messages: "m_" + t's name, in t's schema.
func (t Table) Meta() Table { return t.derived("m_") }

// State returns the table that holds the state of each tenant of a shared
// table t ("active" or "deleted"), beside t and distributed like it on
// Citus, so that every statement on a tenant's rows checks the tenant's
// state on the node that holds them: "s_" + t's name, in t's schema.
func (t Table) State() Table { return t.derived("s_") }

// derived returns prefix + t's name in t's schema, shortened with a hash of
// t's name when that would exceed 63 bytes, so that two tables never share a
// derived table.
func (t Table) derived(prefix string) Table {
	name := prefix + t.Name
	if len(name) > MaxIdentifierLength {
		h := hashName(t.Name)[:13]
		name = name[:MaxIdentifierLength-len(h)-1] + "_" + h
	}
	return Table{Schema: t.Schema, Name: name}
}

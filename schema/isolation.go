package schema

import "fmt"

// Isolation selects how tenants' data is kept apart.
type Isolation int

const (
	// SchemaPerTenant gives each tenant its own schema holding the base
	// table. Every statement touches one schema, every table has a primary
	// key and no serial column, so the mode maps onto Citus schema-based
	// sharding. Dropping a tenant drops its schema.
	SchemaPerTenant Isolation = iota
	// TablePerTenant gives each tenant its own table, all in one schema.
	TablePerTenant
	// SharedTable keeps every tenant in one table with a tenant_id column
	// and the primary key (tenant_id, message_id). Cheapest in catalog size
	// and statements; isolation rests on every statement's tenant_id filter.
	SharedTable
)

// String returns the mode's name as stored in the registry.
func (i Isolation) String() string {
	switch i {
	case SchemaPerTenant:
		return "schema-per-tenant"
	case TablePerTenant:
		return "table-per-tenant"
	case SharedTable:
		return "shared-table"
	}
	return fmt.Sprintf("Isolation(%d)", int(i))
}

// Valid reports whether i is one of the defined modes.
func (i Isolation) Valid() bool { return i >= SchemaPerTenant && i <= SharedTable }

// ParseIsolation returns the mode named s: its String form
// ("schema-per-tenant", "table-per-tenant", "shared-table") or its short
// form ("schema", "table", "shared").
func ParseIsolation(s string) (Isolation, error) {
	for i := SchemaPerTenant; i <= SharedTable; i++ {
		if s == i.String() || s == i.short() {
			return i, nil
		}
	}
	return 0, fmt.Errorf("pgtenant: unknown isolation mode %q: want schema, table or shared", s)
}

func (i Isolation) short() string {
	switch i {
	case SchemaPerTenant:
		return "schema"
	case TablePerTenant:
		return "table"
	}
	return "shared"
}

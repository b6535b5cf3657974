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

// Placement says where one tenant's rows live.
type Placement struct {
	// Table holds the tenant's rows.
	Table Table
	// Partition is the value of the table's tenant_id column that selects
	// the tenant's rows; empty unless the table is shared.
	Partition string
	// OwnSchema is true when the tenant owns Table.Schema (SchemaPerTenant).
	OwnSchema bool
}

// Layout is a configured isolation mode: the mode and the names it derives
// tenants' placements from.
type Layout struct {
	// Mode is the isolation mode.
	Mode Isolation
	// Base is the base table: in SchemaPerTenant its Name is the table
	// created inside each tenant's schema; in TablePerTenant its Schema holds
	// the tenants' tables; in SharedTable it is the shared table itself.
	Base Table
}

// Store identifies the layout in the registry: two routers with equal
// Store values serve the same tenants' data.
func (l Layout) Store() string {
	switch l.Mode {
	case SchemaPerTenant:
		return l.Mode.String() + ":" + l.Base.Name
	case TablePerTenant:
		return l.Mode.String() + ":" + l.Base.Schema
	default:
		return l.Mode.String() + ":" + l.Base.String()
	}
}

// Place returns where tenant id's rows live. It validates id first.
func (l Layout) Place(id string) (Placement, error) {
	if l.Mode == SharedTable {
		if err := ValidateTenant(id); err != nil {
			return Placement{}, err
		}
		return Placement{Table: l.Base, Partition: id}, nil
	}
	name, err := TenantName(id)
	if err != nil {
		return Placement{}, err
	}
	if l.Mode == TablePerTenant {
		return Placement{Table: Table{Schema: l.Base.Schema, Name: name}}, nil
	}
	return Placement{Table: Table{Schema: name, Name: l.Base.Name}, OwnSchema: true}, nil
}

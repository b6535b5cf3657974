package schema

import "fmt"

// Placement says where one tenant's data lives.
type Placement struct {
	// Mode is the isolation mode the tenant is kept in.
	Mode Isolation
	// Table holds the tenant's message bodies; Table.Chunks() the pieces
	// of its large bodies and Table.Meta() its messages' metadata.
	Table Table
	// Partition is the value of the table's tenant_id column that selects
	// the tenant's rows; empty unless the table is shared.
	Partition string
}

// OwnSchema reports whether the tenant owns its table's schema
// (SchemaPerTenant).
func (p Placement) OwnSchema() bool { return p.Mode == SchemaPerTenant }

// Shared reports whether the tenant's rows share their tables with other
// tenants (SharedTable).
func (p Placement) Shared() bool { return p.Partition != "" }

// Layout is a configured isolation mode: the mode and the names it derives
// tenants' placements from.
type Layout struct {
	// Mode is the isolation mode.
	Mode Isolation
	// Base is the base table: in SchemaPerTenant its Name is the table
	// created inside each tenant's schema (its Schema is ignored); in
	// TablePerTenant its Schema holds the tenants' tables (its Name is
	// ignored); in SharedTable it is the shared table itself.
	Base Table
}

// NewLayout validates a layout's names and returns it. table is the base
// table, as "table" or, in SharedTable, "schema.table" (default schema
// "public"); tableSchema is the schema of TablePerTenant's tables. Every
// name must pass ParseTable's rules, so that it can never collide with a
// name pgtenant derives or with the registry. No SQL runs.
func NewLayout(mode Isolation, table, tableSchema string) (Layout, error) {
	if !mode.Valid() {
		return Layout{}, fmt.Errorf("pgtenant: unknown isolation %v", mode)
	}
	base, err := ParseTable(table, "public")
	if err != nil {
		return Layout{}, err
	}
	switch mode {
	case SchemaPerTenant:
		if base.Schema != "public" {
			return Layout{}, fmt.Errorf("%w: in SchemaPerTenant the base table %q takes no schema: each tenant has its own", ErrInvalidName, table)
		}
	case TablePerTenant:
		if base.Schema, err = ParseSchemaName(tableSchema); err != nil {
			return Layout{}, err
		}
	}
	return Layout{Mode: mode, Base: base}, nil
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

// Place returns where tenant id's data lives in this layout. It validates
// id first.
func (l Layout) Place(id string) (Placement, error) {
	if l.Mode == SharedTable {
		if err := ValidateTenant(id); err != nil {
			return Placement{}, err
		}
		return Placement{Mode: l.Mode, Table: l.Base, Partition: id}, nil
	}
	name, err := TenantName(id)
	if err != nil {
		return Placement{}, err
	}
	if l.Mode == TablePerTenant {
		return Placement{Mode: l.Mode, Table: Table{Schema: l.Base.Schema, Name: name}}, nil
	}
	return Placement{Mode: l.Mode, Table: Table{Schema: name, Name: l.Base.Name}}, nil
}

// CurrentVersion is the version of the per-tenant objects this release
// creates: 1 for the table layout, then one more per migration. A test in
// pgtenant's internal ddl package ties it to the list of migrations.
const CurrentVersion = 6

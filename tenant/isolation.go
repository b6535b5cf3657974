package tenant

import "github.com/pgtenant/pgtenant/schema"

// Isolation selects how tenants' data is kept apart; see schema.Isolation.
type Isolation = schema.Isolation

// The isolation modes, re-exported from package schema for convenience.
const (
	SchemaPerTenant = schema.SchemaPerTenant
	TablePerTenant  = schema.TablePerTenant
	SharedTable     = schema.SharedTable
)

package tenant

import "github.com/pgtenant/pgtenant/schema"

// The isolation modes, re-exported from package schema for convenience.
const (
	SchemaPerTenant = schema.SchemaPerTenant
	TablePerTenant  = schema.TablePerTenant
	SharedTable     = schema.SharedTable
)

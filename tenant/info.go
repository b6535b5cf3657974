package tenant

import (
	"context"

	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/internal/registry"
)

// Status is where a tenant stands in a store's registry.
type Status int

const (
	// Absent tenants were never provisioned in the store (nor written to).
	Absent Status = iota
	// Active tenants are provisioned and accept writes.
	Active
	// Dropped tenants were dropped (see Admin.Drop) and not provisioned
	// again: their writes are refused with ErrTenantDeleted.
	Dropped
)

// String returns "absent", "active" or "dropped".
func (s Status) String() string {
	switch s {
	case Active:
		return "active"
	case Dropped:
		return "dropped"
	}
	return "absent"
}

// Info is one tenant's registry entry.
type Info struct {
	// Tenant is the tenant id.
	Tenant string
	// Status says whether the tenant is active, dropped or absent.
	Status Status
	// Version is the schema version of the tenant's objects; 0 when the
	// tenant is absent.
	Version int
	// Location is where the tenant's data lives, as its registry row
	// records it; for an absent tenant, where the store would place it.
	Location Location
}

// Info returns tenant id's registry entry: one statement, no lock.
func (a *Admin) Info(ctx context.Context, id string) (_ Info, err error) {
	defer func() { err = pg.ConnectionError(err) }()
	if err := a.open(id); err != nil {
		return Info{}, err
	}
	rec, found, err := a.h.core.reg.Lookup(ctx, id)
	if err != nil {
		return Info{}, err
	}
	if !found {
		loc, err := a.Locate(id)
		return Info{Tenant: id, Location: loc}, err
	}
	info := Info{Tenant: id, Status: Active, Version: rec.Version, Location: locationOf(rec)}
	if rec.State == registry.Deleted {
		info.Status = Dropped
	}
	return info, nil
}

// locationOf is where a registry row places its tenant.
func locationOf(rec registry.Record) Location {
	p := rec.Placement
	return Location{Mode: p.Mode, Table: p.Table, Chunks: p.Table.Chunks(), Meta: p.Table.Meta(), Partition: p.Partition}
}

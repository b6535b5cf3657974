package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/internal/ddl"
	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/internal/stmt"
	"github.com/pgtenant/pgtenant/schema"
)

// State is a tenant's state in the registry.
type State string

const (
	// Active tenants accept writes.
	Active State = "active"
	// Deleted tenants are tombstoned: writes are refused on every host until
	// the tenant is provisioned again.
	Deleted State = "deleted"
)

// ErrTenantDeleted reports a write to a tenant that was dropped and not
// provisioned again. Nothing is written.
var ErrTenantDeleted = errors.New("pgtenant: tenant deleted")

// Record is one tenant's registry row.
type Record struct {
	ID        string
	Placement schema.Placement
	Version   int
	State     State
}

// Registry runs the registry's statements for one layout.
type Registry struct {
	db          pg.DB
	layout      schema.Layout
	store       string
	lockTimeout time.Duration
	overview    stmt.Stmt[values] // per layout: the shared tables' counts
	citus       bool              // the database is a Citus coordinator (found by Setup)
}

// New returns the Registry of layout over db; lockTimeout bounds the lock
// waits of drops and migrations.
func New(db pg.DB, layout schema.Layout, lockTimeout time.Duration) (*Registry, error) {
	r := &Registry{db: db, layout: layout, store: layout.Store(), lockTimeout: lockTimeout, overview: overviewSQL}
	if layout.Mode == schema.SharedTable {
		var err error
		if r.overview, err = sharedOverviewSQL(layout.Base); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// key returns the values naming tenant id's row.
func (r *Registry) key(id string) *values { return &values{store: r.store, tenant: id} }

// Store returns the layout's key in the registry.
func (r *Registry) Store() string { return r.store }

// Layout returns the registry's layout.
func (r *Registry) Layout() schema.Layout { return r.layout }

// lockKey is the advisory lock that serialises everything done to one
// tenant of the store: creation, tombstone, drop, migration.
func (r *Registry) lockKey(id string) string { return "tenant:" + r.store + "\x00" + id }

// registryTable is the registry as a schema.Table.
var registryTable = schema.Table{Schema: schema.RegistrySchema, Name: "tenants"}

// Setup creates the registry and the layout's shared objects (the shared
// tables, or the schema of TablePerTenant's tables) if they are missing,
// and brings an existing registry or shared table of an older release to
// the current layout. On a Citus coordinator it also distributes them
// (see ddl.CitusRegistry, ddl.CitusShared), whatever
// citus.enable_schema_based_sharding says.
func (r *Registry) Setup(ctx context.Context) error {
	citus, err := ddl.IsCitus(ctx, r.db)
	if err != nil {
		return err
	}
	r.citus = citus
	steps, err := r.registrySteps(ctx)
	if err != nil {
		return err
	}
	// The registry is every store's: its own lock.
	if err := r.run(ctx, "registry", steps); err != nil {
		return err
	}
	if steps, err = r.layoutSteps(ctx); err != nil {
		return err
	}
	return r.run(ctx, "setup:"+r.store, steps)
}

// run runs steps in a transaction under the advisory lock for key, with
// Citus's schema-based sharding off in it: what Setup creates is shared,
// and distributed as such.
func (r *Registry) run(ctx context.Context, key string, steps []ddl.Step) error {
	if len(steps) == 0 {
		return nil
	}
	if r.citus {
		steps = append([]ddl.Step{{SQL: []string{ddl.NoSchemaSharding}}}, steps...)
	}
	return pg.InTx(ctx, r.db, key, func(tx pgx.Tx) error { return r.runDDL(ctx, tx, steps...) })
}

// runDDL runs DDL steps in tx: on Citus a statement per round trip (see
// ddl.RunEach).
func (r *Registry) runDDL(ctx context.Context, tx pgx.Tx, steps ...ddl.Step) error {
	if r.citus {
		return ddl.RunEach(ctx, tx, steps...)
	}
	return ddl.Run(ctx, tx, steps...)
}

// registrySteps are what the registry lacks: itself, the columns of later
// releases, on Citus its distribution as a reference table.
func (r *Registry) registrySteps(ctx context.Context) ([]ddl.Step, error) {
	var steps []ddl.Step
	if ok, err := ddl.Exists(ctx, r.db, registryTable); err != nil {
		return nil, err
	} else if !ok {
		steps = append(steps, ddl.Step{SQL: registryDDL()})
	} else {
		names := make([]string, len(addedColumns))
		for i, c := range addedColumns {
			names[i], _, _ = strings.Cut(c, " ")
		}
		var missing int
		if err := r.db.QueryRow(ctx, missingColumnsSQL.SQL, missingColumnsSQL.Args(nil, &values{relation: Table, names: names})...).
			Scan(&missing); err != nil {
			return nil, err
		}
		for _, c := range addedColumns[len(addedColumns)-missing:] {
			steps = append(steps, ddl.Step{SQL: []string{"ALTER TABLE " + Table + " ADD COLUMN IF NOT EXISTS " + c}})
		}
	}
	steps = append(steps, ddl.Step{Done: stateKeyDone, SQL: []string{stateKeySQL}})
	if r.citus {
		steps = append(steps, ddl.CitusRegistry(registryTable)...)
	}
	return steps, nil
}

// layoutSteps are what the layout's shared objects lack.
func (r *Registry) layoutSteps(ctx context.Context) ([]ddl.Step, error) {
	var steps []ddl.Step
	switch r.layout.Mode {
	case schema.SharedTable:
		if ok, err := ddl.Exists(ctx, r.db, r.layout.Base.Meta()); err != nil {
			return nil, err
		} else if !ok {
			steps = append(steps, ddl.Shared(r.layout.Base)...)
		} else {
			steps = append(steps, ddl.SharedUpgrades(r.layout.Base)...)
		}
		if r.citus {
			steps = append(steps, ddl.CitusShared(r.layout.Base)...)
		}
	case schema.TablePerTenant:
		steps = append(steps, ddl.Step{SQL: []string{ddl.Schema(r.layout.Base.Schema)}})
	}
	return steps, nil
}

// recordRow holds a registry row's columns as scanned.
type recordRow struct {
	id, mode, schemaName, tableName, state string
	version                                int
}

func (r *recordRow) dest() []any {
	return []any{&r.id, &r.mode, &r.schemaName, &r.tableName, &r.version, &r.state}
}

func (r *recordRow) record() (Record, error) {
	iso, err := schema.ParseIsolation(r.mode)
	if err != nil {
		return Record{}, err
	}
	rec := Record{ID: r.id, Version: r.version, State: State(r.state),
		Placement: schema.Placement{Mode: iso, Table: schema.Table{Schema: r.schemaName, Name: r.tableName}}}
	if iso == schema.SharedTable {
		rec.Placement.Partition = rec.ID
	}
	return rec, nil
}

func scanRecord(row pgx.Row) (Record, error) {
	var r recordRow
	if err := row.Scan(r.dest()...); err != nil {
		return Record{}, err
	}
	return r.record()
}

// Lookup returns tenant id's registry row, if any.
func (r *Registry) Lookup(ctx context.Context, id string) (Record, bool, error) {
	return r.lookup(ctx, r.db, id)
}

func (r *Registry) lookup(ctx context.Context, db pg.DB, id string) (Record, bool, error) {
	return r.one(ctx, db, lookupSQL, r.key(id))
}

// one runs a statement that returns at most one registry row.
func (r *Registry) one(ctx context.Context, db pg.DB, s stmt.Stmt[values], v *values) (Record, bool, error) {
	rec, err := scanRecord(db.QueryRow(ctx, s.SQL, s.Args(nil, v)...))
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, false, nil
	}
	return rec, err == nil, err
}

// Check returns tenant id's registry row, if any, and whether the tenant
// is ready (see Ready): one statement, no lock.
func (r *Registry) Check(ctx context.Context, id string) (rec Record, found, ready bool, err error) {
	v := r.key(id)
	v.version = schema.CurrentVersion
	var row recordRow
	err = r.db.QueryRow(ctx, checkSQL.SQL, checkSQL.Args(nil, v)...).Scan(append(row.dest(), &ready)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, false, false, nil
	}
	if err != nil {
		return Record{}, false, false, err
	}
	rec, err = row.record()
	return rec, err == nil, ready && err == nil, err
}

// Ready is the cheap check for a tenant a process has not cached: its row,
// if it is active, at the current version, and its table exists. One
// statement, no transaction, no lock. A tenant that is not ready has false
// and no error.
func (r *Registry) Ready(ctx context.Context, id string) (Record, bool, error) {
	return r.ready(ctx, r.db, id)
}

func (r *Registry) ready(ctx context.Context, db pg.DB, id string) (Record, bool, error) {
	v := r.key(id)
	v.version = schema.CurrentVersion
	return r.one(ctx, db, readySQL, v)
}

// put writes tenant id's row with placement p and state, creating it if
// missing. Activating a tenant records the current version. When
// resetUsage is true the usage counters become unknown (NULL): the next
// write under a quota counts them afresh.
func (r *Registry) put(ctx context.Context, tx pgx.Tx, id string, p schema.Placement, state State, resetUsage bool) error {
	s := putSQL
	if resetUsage {
		s = putResetSQL
	}
	v := &values{store: r.store, tenant: id, mode: p.Mode.String(),
		schemaName: p.Table.Schema, tableName: p.Table.Name, version: schema.CurrentVersion, state: string(state)}
	if _, err := tx.Exec(ctx, s.SQL, s.Args(nil, v)...); err != nil || !p.Shared() {
		return err
	}
	st, err := putStateSQL(p)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, st.SQL, st.Args(nil, v)...)
	return err
}

// Claim makes sure tenant id's objects exist at the current version and
// marks it active, in one transaction under the tenant's advisory lock. A
// tombstoned tenant gives ErrTenantDeleted unless provision is true, which
// activates it again, empty: whatever a failed drop left is removed first.
// A new tenant is placed by the layout.
//
// Under the lock it checks again whether the tenant is ready (another host
// may have created it meanwhile) and then changes nothing. Otherwise it
// writes the tenant's registry row before any DDL: writes lock that row
// (in their guard) before they touch the tenant's tables, so taking the
// same order here means the DDL's table locks cannot deadlock with them.
func (r *Registry) Claim(ctx context.Context, id string, provision bool) (Record, error) {
	p, err := r.layout.Place(id)
	if err != nil {
		return Record{}, err
	}
	rec := Record{ID: id, Placement: p, Version: schema.CurrentVersion, State: Active}
	err = pg.InTx(ctx, r.db, r.lockKey(id), func(tx pgx.Tx) error {
		if ready, ok, err := r.ready(ctx, tx, id); err != nil || ok {
			rec = ready
			return err
		}
		old, found, err := r.lookup(ctx, tx, id)
		if err != nil {
			return err
		}
		revive := found && old.State == Deleted
		if revive && !provision {
			return ErrTenantDeleted
		}
		if err := r.put(ctx, tx, id, p, Active, revive || !found); err != nil {
			return err
		}
		if revive {
			if err := r.dropIn(ctx, tx, id, old.Placement); err != nil {
				return err
			}
		}
		steps := ddl.Objects(p)
		if r.citus && p.OwnSchema() {
			steps = append(steps, ddl.CitusSchema(p.Table.Schema))
		}
		return r.runDDL(ctx, tx, steps...)
	})
	if err != nil {
		return Record{}, objectsClash(err)
	}
	return rec, nil
}

// objectsClash explains a unique violation on the registry's object index:
// two tenants mapped to one object, which the name map rules out.
func objectsClash(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "tenants_objects" {
		return fmt.Errorf("two tenants map to one object (refused): %w", err)
	}
	return err
}

// Tombstone marks tenant id deleted and commits, so that from then on its
// writes are refused on every host. It first locks the tenant's row (FOR
// UPDATE), which waits for the writes in flight: each holds the row FOR KEY
// SHARE in its guard until it commits, and a write that comes later sees
// the tombstone. It returns the tenant's placement.
func (r *Registry) Tombstone(ctx context.Context, id string) (schema.Placement, error) {
	p, err := r.layout.Place(id)
	if err != nil {
		return p, err
	}
	err = pg.InTx(ctx, r.db, r.lockKey(id), func(tx pgx.Tx) error {
		rec, found, err := r.lookupForUpdate(ctx, tx, id)
		if err != nil {
			return err
		}
		if found {
			p = rec.Placement
		}
		return r.put(ctx, tx, id, p, Deleted, true)
	})
	return p, err
}

func (r *Registry) lookupForUpdate(ctx context.Context, tx pgx.Tx, id string) (Record, bool, error) {
	return r.one(ctx, tx, lockSQL, r.key(id))
}

// DropObjects removes tenant id's objects at p (its rows, in a shared
// table) in a transaction of its own, under the tenant's advisory lock and
// bounded by the lock timeout. The schema of SchemaPerTenant goes too,
// unless another layout keeps a table in it.
func (r *Registry) DropObjects(ctx context.Context, id string, p schema.Placement) error {
	return pg.InTx(ctx, r.db, r.lockKey(id), func(tx pgx.Tx) error {
		return r.dropIn(ctx, tx, id, p)
	})
}

// dropBatch is the number of a shared table's messages one statement
// deletes when a tenant is dropped.
const dropBatch = 10_000

// dropIn removes tenant id's objects at p in tx, within the lock
// timeout: its own tables (and schema), or its rows of the shared tables.
func (r *Registry) dropIn(ctx context.Context, tx pgx.Tx, id string, p schema.Placement) error {
	if err := pg.SetLockTimeout(ctx, tx, r.lockTimeout); err != nil {
		return err
	}
	if p.Shared() {
		return r.dropRows(ctx, tx, id, p)
	}
	return dropOwn(ctx, tx, p)
}

// dropOwn drops a tenant's own tables, and its schema in SchemaPerTenant
// unless another layout keeps a table there.
func dropOwn(ctx context.Context, tx pgx.Tx, p schema.Placement) error {
	if _, err := tx.Exec(ctx, ddl.DropTables(p)); err != nil || !p.OwnSchema() {
		return err
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return err
	}
	if _, err := sp.Exec(ctx, ddl.DropSchema(p.Table.Schema)); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "2BP01" { // another layout's table is there
			return sp.Rollback(ctx)
		}
		return err
	}
	return sp.Commit(ctx)
}

// dropRows deletes a tenant's rows of the shared tables in batches of
// dropBatch messages, taking row locks only: the other tenants' reads and
// writes go on. Message rows go before chunk and metadata rows, the order
// every write locks them in.
func (r *Registry) dropRows(ctx context.Context, tx pgx.Tx, id string, p schema.Placement) error {
	for _, t := range []schema.Table{p.Table, p.Table.Chunks(), p.Table.Meta()} {
		if ok, err := ddl.Exists(ctx, tx, t); err != nil || !ok {
			if err != nil {
				return err
			}
			continue
		}
		del, err := sharedDropSQL(t)
		if err != nil {
			return err
		}
		args := del.Args(nil, &values{tenant: id, limit: dropBatch})
		for {
			tag, err := tx.Exec(ctx, del.SQL, args...)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				break
			}
		}
	}
	return nil
}

// List returns the ids of the store's active tenants in ascending order.
func (r *Registry) List(ctx context.Context) ([]string, error) {
	rows, err := r.db.Query(ctx, listSQL.SQL, listSQL.Args(nil, r.key(""))...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Usage is one tenant's line of the overview.
type Usage struct {
	ID string
	// Messages is exact in a shared table, else the planner's estimate.
	Messages int64
	// Bytes is the sum of body sizes in a shared table, else the disk size
	// of the tenant's message table with its indexes and TOAST.
	Bytes int64
	// Queued is the number of metadata rows: exact in a shared table, else
	// the planner's estimate.
	Queued int64
}

// Overview returns cheap statistics for every active tenant, in id order:
// in the per-tenant modes from the catalog (the planner's row estimate and
// the table's disk size), in SharedTable from one grouped scan.
func (r *Registry) Overview(ctx context.Context) ([]Usage, error) {
	rows, err := r.db.Query(ctx, r.overview.SQL, r.overview.Args(nil, r.key(""))...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Usage, error) {
		var u Usage
		err := row.Scan(&u.ID, &u.Messages, &u.Bytes, &u.Queued)
		return u, err
	})
}

// Version is one tenant's object version.
type Version struct {
	ID      string
	Version int
}

// Versions returns the store's active tenants with the version of their
// objects, in id order.
func (r *Registry) Versions(ctx context.Context) ([]Version, error) {
	rows, err := r.db.Query(ctx, versionsSQL.SQL, versionsSQL.Args(nil, r.key(""))...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Version, error) {
		var v Version
		err := row.Scan(&v.ID, &v.Version)
		return v, err
	})
}

// Migrate brings tenant id's objects to the current version in one
// transaction, under the tenant's advisory lock and the lock timeout, and
// records the version in the same transaction. It reports false when there
// was nothing to do (the tenant is current, gone or tombstoned).
func (r *Registry) Migrate(ctx context.Context, id string) (bool, error) {
	migrated := false
	err := pg.InTx(ctx, r.db, r.lockKey(id), func(tx pgx.Tx) error {
		if err := pg.SetLockTimeout(ctx, tx, r.lockTimeout); err != nil {
			return err
		}
		rec, found, err := r.lookup(ctx, tx, id)
		if err != nil || !found || rec.State != Active || rec.Version >= schema.CurrentVersion {
			return err
		}
		// The registry row first, then the tables: the order writes lock
		// them in.
		v := r.key(id)
		v.version = schema.CurrentVersion
		if _, err := tx.Exec(ctx, migratedSQL.SQL, migratedSQL.Args(nil, v)...); err != nil {
			return err
		}
		if !rec.Placement.Shared() {
			if err := r.runDDL(ctx, tx, ddl.Migrate(rec.Version, rec.Placement.Table, false)...); err != nil {
				return err
			}
		}
		migrated = true
		return nil
	})
	return migrated, err
}

// GuardArgs returns the guards' values for tenant id: its store and id.
func (r *Registry) GuardArgs(id string) (store, tenant string) { return r.store, id }

// Guards are the conditions that every statement on a tenant's data
// carries, so that a tombstoned tenant has no data and takes no write, on
// every host, whether or not its drop finished.
type Guards struct {
	// Read is true while the tenant is active; Write also locks what it
	// reads FOR KEY SHARE until the write commits.
	Read, Write string
	// Insert is what a guarded INSERT ... SELECT follows its select list
	// with, and Key the tenant column's value in that list (before the
	// message id; empty without a tenant column).
	Insert, Key string
}

// GuardsOf returns the guards of a tenant placed at p. A tenant of its own
// objects is guarded by its registry row (ReadGuard, WriteGuard; their
// parameters @store and @tenant). A tenant of a shared table is guarded by
// its row of the shared table's tenant-state table (parameter @tenant_id),
// which Citus co-locates with the tenant's rows: every statement then runs
// on the one node that holds them, inserts too, which select from it.
func GuardsOf(p schema.Placement) Guards {
	if !p.Shared() {
		return Guards{Read: ReadGuard, Write: WriteGuard, Insert: "WHERE " + WriteGuard}
	}
	st, col := p.Table.State().Sanitize(), schema.TenantColumn
	active := "s." + col + " OPERATOR(pg_catalog.=) @tenant_id AND s.state OPERATOR(pg_catalog.=) 'active'"
	return Guards{
		Read:   "EXISTS (SELECT 1 FROM " + st + " s WHERE " + active + ")",
		Write:  "EXISTS (SELECT 1 FROM " + st + " s WHERE " + active + " FOR KEY SHARE)",
		Insert: "FROM " + st + " s WHERE " + active + " FOR KEY SHARE",
		Key:    "s." + col + ", ",
	}
}

package tenant

import (
	"context"
	"errors"
	"fmt"

	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/schema"
)

// MigrateResult counts what MigrateAll did.
type MigrateResult struct {
	// Migrated tenants were brought to schema.CurrentVersion.
	Migrated int
	// Current tenants were already there and were skipped.
	Current int
	// Failed tenants are listed with their errors; they stay at their
	// version and are retried by the next run.
	Failed map[string]error
}

// MigrateAll brings every active tenant's objects to schema.CurrentVersion.
// Each tenant migrates in its own transaction, under the tenant's advisory
// lock and the Factory's lock timeout, and records its new version in the
// registry in the same transaction. So a run that is interrupted (its
// context cancelled, the process killed) can simply be run again: tenants
// already current are skipped. A tenant that fails does not stop the
// others. When ctx is cancelled, the tenants in flight finish, no new one
// starts, and MigrateAll returns ctx's error; otherwise nil.
func (a *Admin) MigrateAll(ctx context.Context, opts BatchOptions) (res MigrateResult, err error) {
	defer func() { err = pg.ConnectionError(err) }()
	res = MigrateResult{Failed: map[string]error{}}
	if a.h.closed.Load() {
		return res, ErrClosed
	}
	c := a.h.core
	all, err := c.reg.Versions(ctx)
	if err != nil {
		return res, err
	}
	var work []string
	for _, t := range all {
		if t.Version >= schema.CurrentVersion {
			res.Current++
		} else {
			work = append(work, t.ID)
		}
	}
	done := 0
	forEachTenant(ctx, work, opts.Concurrency,
		func(id string) error {
			migrated, err := c.migrate(ctx, id)
			if err == nil && !migrated {
				err = errAlreadyCurrent
			}
			return err
		},
		func(id string, err error) {
			switch {
			case err == errAlreadyCurrent:
				res.Current++
				err = nil
			case err != nil:
				res.Failed[id] = err
			default:
				res.Migrated++
			}
			done++
			if opts.Progress != nil {
				opts.Progress(done, len(work), id, err)
			}
		})
	c.obs.log.InfoContext(ctx, "pgtenant: migration run", "store", c.reg.Store(), "version", schema.CurrentVersion,
		"migrated", res.Migrated, "current", res.Current, "failed", len(res.Failed))
	return res, ctx.Err()
}

// errAlreadyCurrent marks a tenant another host migrated first.
var errAlreadyCurrent = errors.New("already current")

// migrate brings one tenant to the current version; false if it already
// was (another host got there first). The tenant's transaction runs to its
// end even if ctx is cancelled meanwhile (bounded by the lock timeout and
// pg.DDLTimeout), so that a cancelled run knows exactly which tenants it
// migrated.
func (c *core) migrate(ctx context.Context, id string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pg.DDLTimeout)
	defer cancel()
	migrated, err := c.reg.Migrate(ctx, id)
	if migrated {
		c.hub.Changed(id)
	}
	if err != nil {
		return false, fmt.Errorf("migrating tenant %q: %w", id, pg.Classify(err))
	}
	return migrated, nil
}

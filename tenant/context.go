package tenant

import (
	"context"
	"errors"

	"github.com/pgtenant/pgtenant/backend"
	"github.com/pgtenant/pgtenant/internal/registry"
	"github.com/pgtenant/pgtenant/schema"
)

var (
	// ErrNoTenant reports a call whose tenant could not be resolved (no
	// tenant in the context, or a resolver that found none). No SQL runs.
	ErrNoTenant = errors.New("pgtenant: no tenant")
	// ErrInvalidTenant reports a tenant id outside the accepted set (see
	// Validate). No SQL runs.
	ErrInvalidTenant = schema.ErrInvalidTenant
	// ErrTenantMismatch reports a call on storage pinned to one tenant (see
	// Factory.ForTenant) whose context names another tenant. Nothing is
	// read or written.
	ErrTenantMismatch = errors.New("pgtenant: context names another tenant than the storage's")
	// ErrTenantDeleted reports a write to a tenant that was dropped and not
	// provisioned again. Nothing is written.
	ErrTenantDeleted = registry.ErrTenantDeleted
	// ErrTooLarge reports a body over the maximum message size (see
	// Factory.WithMaxMessageSize); nothing was stored.
	ErrTooLarge = backend.ErrTooLarge
	// ErrQuotaExceeded reports a write over the tenant's quota (see
	// Factory.WithQuota); nothing was stored.
	ErrQuotaExceeded = backend.ErrQuotaExceeded
	// ErrConnection reports a failed or lost connection to PostgreSQL; for
	// a write or delete the outcome is unknown (old or new state, complete),
	// and repeating the call is safe. See backend.ErrConnection.
	ErrConnection = backend.ErrConnection
	// ErrPreparedStatements reports named prepared statements mixed up by
	// a pooler in transaction mode (PgBouncer before 1.21): use
	// WithExecMode(pgx.QueryExecModeCacheDescribe). See
	// backend.ErrPreparedStatements.
	ErrPreparedStatements = backend.ErrPreparedStatements
)

type ctxKey struct{}

// WithTenant returns a context that carries tenant id. The default resolver
// reads it back with FromContext.
func WithTenant(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the tenant id set by WithTenant.
func FromContext(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(ctxKey{}).(string)
	return id, ok && id != ""
}

// Validate returns nil if id is an acceptable tenant id, and otherwise an
// error that errors.Is ErrInvalidTenant. Accepted: 1 to 128 bytes of ASCII
// letters, digits, '-', '_' and '.', starting with a letter or digit; case
// is significant.
func Validate(id string) error { return schema.ValidateTenant(id) }

// Resolver finds the tenant a call belongs to.
type Resolver interface {
	Resolve(ctx context.Context, messageID string) (string, error)
}

// ResolverFunc adapts a function to Resolver.
type ResolverFunc func(ctx context.Context, messageID string) (string, error)

// Resolve calls f.
func (f ResolverFunc) Resolve(ctx context.Context, messageID string) (string, error) {
	return f(ctx, messageID)
}

// ContextResolver is the default Resolver: the tenant set by WithTenant.
var ContextResolver Resolver = ResolverFunc(func(ctx context.Context, _ string) (string, error) {
	id, ok := FromContext(ctx)
	if !ok {
		return "", ErrNoTenant
	}
	return id, nil
})

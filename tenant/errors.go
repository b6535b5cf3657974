package tenant

import (
	"errors"
	"fmt"

	"github.com/pgtenant/pgtenant/backend"
	"github.com/pgtenant/pgtenant/internal/engine"
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
	// read or written. The error is a *TenantMismatchError.
	ErrTenantMismatch = errors.New("pgtenant: context names another tenant than the storage's")
	// ErrTenantDeleted reports a write to a tenant that was dropped and not
	// provisioned again. Nothing is written.
	ErrTenantDeleted = registry.ErrTenantDeleted
	// ErrTooLarge reports a body over the maximum message size (see
	// Factory.WithMaxMessageSize), or a message's metadata over the
	// maximum metadata size (see Factory.WithMaxMetadataSize); nothing was
	// stored.
	ErrTooLarge = backend.ErrTooLarge
	// ErrQuotaExceeded reports a write over the tenant's quota (see
	// Factory.WithQuota); nothing was stored. The error is a *QuotaError.
	ErrQuotaExceeded = backend.ErrQuotaExceeded
	// ErrInvalidMetadata reports metadata that cannot be stored as given:
	// a queue state RetrySpool does not have. Nothing was stored. It wraps
	// metastorage.ErrInvalidState.
	ErrInvalidMetadata = engine.ErrInvalidMetadata
	// ErrConnection reports a failed or lost connection to PostgreSQL; for
	// a write or delete the outcome is unknown (old or new state, complete),
	// and repeating the call is safe. See backend.ErrConnection.
	ErrConnection = backend.ErrConnection
	// ErrPreparedStatements reports named prepared statements mixed up by
	// a pooler in transaction mode (PgBouncer before 1.21): use
	// WithExecMode(pgx.QueryExecModeCacheDescribe). See
	// backend.ErrPreparedStatements.
	ErrPreparedStatements = backend.ErrPreparedStatements
	// ErrClosed reports use of a closed Router, MetaBackend or Admin, or
	// of a reader or writer after Close.
	ErrClosed = engine.ErrClosed
)

// QuotaError reports a write that the tenant's quota refused (see
// Factory.WithQuota); nothing was stored. It unwraps to ErrQuotaExceeded.
type QuotaError struct {
	// Tenant is the tenant whose quota refused the write.
	Tenant string
	// Unit is "bytes" or "messages": the bound that refused it.
	Unit string
	// Used is what the write would have brought the tenant's usage to;
	// Limit is the bound.
	Used, Limit int64
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("%v: tenant %q would store %d %s, at most %d allowed", ErrQuotaExceeded, e.Tenant, e.Used, e.Unit, e.Limit)
}

// Unwrap returns ErrQuotaExceeded.
func (e *QuotaError) Unwrap() error { return ErrQuotaExceeded }

// TenantMismatchError reports a call on storage pinned to tenant Want
// whose context names tenant Got; nothing was read or written. It unwraps
// to ErrTenantMismatch.
type TenantMismatchError struct {
	Want, Got string
}

func (e *TenantMismatchError) Error() string {
	return fmt.Sprintf("%v: the call names tenant %q, this storage serves %q", ErrTenantMismatch, e.Got, e.Want)
}

// Unwrap returns ErrTenantMismatch.
func (e *TenantMismatchError) Unwrap() error { return ErrTenantMismatch }

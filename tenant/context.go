package tenant

import (
	"context"

	"github.com/pgtenant/pgtenant/schema"
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

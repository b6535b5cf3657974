package schema

import (
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
)

// MaxTenantLength is the longest tenant id accepted, in bytes.
const MaxTenantLength = 128

// ErrInvalidTenant reports a tenant id outside the accepted set. It is
// returned before any SQL runs. Package tenant re-exports it.
var ErrInvalidTenant = errors.New("pgtenant: invalid tenant id")

// ValidateTenant reports whether id is an acceptable tenant id: 1 to 128
// bytes of ASCII letters, digits, '-', '_' and '.', starting with a letter or
// a digit. This covers slugs, UUIDs, numeric ids and mixed-case names; case
// is significant ("Acme" and "acme" are two tenants).
func ValidateTenant(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty", ErrInvalidTenant)
	}
	if len(id) > MaxTenantLength {
		return fmt.Errorf("%w: %d bytes, at most %d allowed", ErrInvalidTenant, len(id), MaxTenantLength)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '-' || c == '_' || c == '.') && i > 0:
		default:
			return fmt.Errorf("%w: byte %d (%q) not allowed: use letters, digits, '-', '_' and '.', starting with a letter or digit", ErrInvalidTenant, i, c)
		}
	}
	return nil
}

// TenantName maps a tenant id to the identifier that names its schema
// (SchemaPerTenant) or table (TablePerTenant). The map is injective, stable
// across versions and hosts, and its results are at most 63 bytes, never
// reserved (they start with "t_" or "h_", so never "pg_", "public",
// "information_schema" or the registry's schema):
//
//   - Plain form: an id made only of lower-case letters, digits and '_', of at
//     most 61 bytes, maps to "t_" + id. Distinct ids give distinct names.
//   - Hashed form: every other id maps to "h_" + a readable part + "_" + the
//     first 26 characters (130 bits) of the lower-case, unpadded base32
//     SHA-256 of the id. The readable part is the id in lower case with every
//     byte outside [a-z0-9] replaced by '_', cut to 34 bytes. Names of the two
//     forms differ in their prefix; two hashed names are equal only if the
//     SHA-256 digests share 130 bits. The tenant registry also holds a unique
//     index on object names, so even such a collision would fail loudly
//     rather than share storage.
func TenantName(id string) (string, error) {
	if err := ValidateTenant(id); err != nil {
		return "", err
	}
	if len(id) <= MaxIdentifierLength-2 && isPlain(id) {
		return "t_" + id, nil
	}
	readable := []byte(strings.ToLower(id))
	for i, c := range readable {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			readable[i] = '_'
		}
	}
	const hashLen = 26
	if maxReadable := MaxIdentifierLength - 2 - 1 - hashLen; len(readable) > maxReadable {
		readable = readable[:maxReadable]
	}
	return "h_" + string(readable) + "_" + hashName(id)[:hashLen], nil
}

func isPlain(id string) bool {
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

var nameEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// hashName returns the lower-case base32 SHA-256 of s (52 characters).
func hashName(s string) string {
	sum := sha256.Sum256([]byte(s))
	return nameEncoding.EncodeToString(sum[:])
}

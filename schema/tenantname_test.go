package schema

import (
	"errors"
	"strings"
	"testing"
)

// Fixed vectors (cross-checked with an independent Python sha256/base32
// computation): the map from tenant ids to object names is part of the
// on-disk format. Changing any of these strands existing tenants' data.
var nameVectors = map[string]string{
	"acme":                                 "t_acme",
	"tenant_42":                            "t_tenant_42",
	"42":                                   "t_42",
	"Acme":                                 "h_acme_g4bwzwhzorwtguby5sus7cttvz",
	"ACME":                                 "h_acme_vayi5drojnzta7mgbxro77ogox",
	"acme-corp":                            "h_acme_corp_6e72g7ffv3ih4ez6jv5qo2kbvx",
	"acme.corp":                            "h_acme_corp_qcq5ltdchmlf6zrhlqlkoq3xqh",
	"6f1c1f0e-3a5b-4c2d-9e8f-0a1b2c3d4e5f": "h_6f1c1f0e_3a5b_4c2d_9e8f_0a1b2c3d4e_nnfs52rxluntnveoibmpeqgsev",
	strings.Repeat("a", 61):                "t_" + strings.Repeat("a", 61),
	strings.Repeat("a", 62):                "h_" + strings.Repeat("a", 34) + "_6uditdghylqjf6plt6w2465fao",
}

func TestTenantNameVectors(t *testing.T) {
	for id, want := range nameVectors {
		got, err := TenantName(id)
		if err != nil {
			t.Errorf("TenantName(%q): %v", id, err)
			continue
		}
		if got != want {
			t.Errorf("TenantName(%q) = %q, want %q", id, got, want)
		}
	}
}

func TestValidateTenant(t *testing.T) {
	good := []string{"a", "acme", "Acme", "acme-corp", "acme.corp_1", "0", strings.Repeat("x", 128),
		"6f1c1f0e-3a5b-4c2d-9e8f-0a1b2c3d4e5f"}
	bad := []string{"", "-acme", ".acme", "_acme", "acme corp", "acme/corp", "a'; DROP SCHEMA public; --", `a"b`,
		"a\x00b", "ümlaut", "日本", strings.Repeat("x", 129), strings.Repeat("x", 200), "a\nb", "a$b"}
	for _, id := range good {
		if err := ValidateTenant(id); err != nil {
			t.Errorf("ValidateTenant(%q) = %v", id, err)
		}
	}
	for _, id := range bad {
		if err := ValidateTenant(id); !errors.Is(err, ErrInvalidTenant) {
			t.Errorf("ValidateTenant(%q) = %v, want ErrInvalidTenant", id, err)
		}
		if _, err := TenantName(id); !errors.Is(err, ErrInvalidTenant) {
			t.Errorf("TenantName(%q) = %v, want ErrInvalidTenant", id, err)
		}
	}
}

func TestTenantNameLongPrefixes(t *testing.T) {
	prefix := strings.Repeat("p", 63)
	seen := map[string]string{}
	for _, suffix := range []string{"", "a", "b", "aa", "A", "-", strings.Repeat("z", 65)} {
		id := prefix + suffix
		name, err := TenantName(id)
		if err != nil {
			t.Fatal(err)
		}
		if other, dup := seen[name]; dup {
			t.Fatalf("%q and %q both map to %q", id, other, name)
		}
		seen[name] = id
	}
}

func checkName(t *testing.T, id, name string) {
	t.Helper()
	if len(name) > MaxIdentifierLength || len(name) < 3 {
		t.Fatalf("TenantName(%q) = %q: %d bytes", id, name, len(name))
	}
	if !strings.HasPrefix(name, "t_") && !strings.HasPrefix(name, "h_") {
		t.Fatalf("TenantName(%q) = %q: bad prefix", id, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			t.Fatalf("TenantName(%q) = %q: byte %q", id, name, c)
		}
	}
	if _, err := parseIdent(name); err != nil {
		t.Fatalf("TenantName(%q) = %q is not a valid identifier: %v", id, name, err)
	}
}

// FuzzTenantName checks, for any pair of inputs, that accepted ids map to
// valid identifiers of at most 63 bytes, and that distinct ids never share
// a name. Its seed corpus runs as a normal test.
func FuzzTenantName(f *testing.F) {
	for id := range nameVectors {
		f.Add(id, id+"x")
	}
	f.Add("acme", "Acme")
	f.Add("a_b", "a-b")
	f.Add("a.b", "a_b")
	f.Add(strings.Repeat("q", 63)+"1", strings.Repeat("q", 63)+"2")
	f.Add("pg_catalog", "public")
	f.Add("t_acme", "acme")
	f.Fuzz(func(t *testing.T, a, b string) {
		na, errA := TenantName(a)
		nb, errB := TenantName(b)
		if (errA == nil) != (ValidateTenant(a) == nil) || (errB == nil) != (ValidateTenant(b) == nil) {
			t.Fatal("TenantName and ValidateTenant disagree")
		}
		if errA == nil {
			checkName(t, a, na)
		}
		if errB == nil {
			checkName(t, b, nb)
		}
		if errA == nil && errB == nil && a != b && na == nb {
			t.Fatalf("%q and %q both map to %q", a, b, na)
		}
	})
}

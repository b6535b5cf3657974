package tenant_test

import (
	"testing"

	"github.com/pgtenant/pgtenant/internal/pgtest"
)

// The Examples are the README's code: they run against a PostgreSQL
// container, at the DATABASE_URL pgtest gives them.
func TestMain(m *testing.M) { pgtest.MainWithExamples(m) }

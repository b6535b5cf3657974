package backend_test

import (
	"testing"

	"github.com/pgtenant/pgtenant/internal/testdb"
)

// The Examples are the README's code: they run against the PostgreSQL
// server of PGTENANT_TEST_DSN (make test starts one), at the DATABASE_URL
// testdb gives them.
func TestMain(m *testing.M) { testdb.Main(m, true) }

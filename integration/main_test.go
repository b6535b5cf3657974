package integration

import (
	"testing"

	"github.com/pgtenant/pgtenant/integration/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

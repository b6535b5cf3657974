package integration

import (
	"testing"

	"github.com/pgtenant/pgtenant/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

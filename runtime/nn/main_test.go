package nn

import (
	"testing"

	"github.com/flbq/flbq/runtime/backend/backendtest"
)

// TestMain logs the active tier and fails the run when
// FLBQ_TEST_REQUIRE_TIER names one that is not active.
func TestMain(m *testing.M) { backendtest.Main(m) }

package maskrcnn

import (
	"testing"

	"github.com/flbq/flbq/runtime/backend/backendtest"
)

// TestMain logs the CPU tier and enforces FLBQ_TEST_REQUIRE_TIER.
func TestMain(m *testing.M) { backendtest.Main(m) }

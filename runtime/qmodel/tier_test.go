package qmodel_test

import (
	"strings"
	"testing"

	"github.com/flbq/flbq/runtime/backend/backendtest"
	"github.com/flbq/flbq/runtime/qmodel"
)

// TestMain logs the CPU tier and enforces FLBQ_TEST_REQUIRE_TIER.
func TestMain(m *testing.M) { backendtest.Main(m) }

// A mistyped FLBQ_CPU makes Load fail naming the variable, before it reads
// anything.
func TestLoadBadEnvironment(t *testing.T) {
	if backendtest.InChild() {
		_, err := qmodel.Load(nil, nil)
		if err == nil || !strings.Contains(err.Error(), `FLBQ_CPU="avx"`) {
			t.Fatalf("Load with FLBQ_CPU=avx: %v", err)
		}
		return
	}
	if out, err := backendtest.RunInChild(t, "TestLoadBadEnvironment", "FLBQ_CPU=avx"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

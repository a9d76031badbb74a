// Package shareddir locates the project's shared fixtures directory
// (../shared beside the repository root: COCO goldens, real photographs,
// DESIGN.md) for tests, benchmarks and demos.
package shareddir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// EnvVar overrides the search when set.
const EnvVar = "FLBQ_SHARED"

// Dir returns the shared directory: $FLBQ_SHARED if set, else the first
// directory named "shared" holding DESIGN.md beside the working directory or
// one of its parents (tests run in their package's directory).
func Dir() (string, error) {
	if d := os.Getenv(EnvVar); d != "" {
		if _, err := os.Stat(d); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvVar, d, err)
		}
		return d, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		cand := filepath.Join(filepath.Dir(d), "shared")
		if _, err := os.Stat(filepath.Join(cand, "DESIGN.md")); err == nil {
			return cand, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("shared fixtures directory not found beside the repository (set " + EnvVar + ")")
		}
	}
}

// Path joins rel onto Dir.
func Path(rel ...string) (string, error) {
	d, err := Dir()
	if err != nil {
		return "", err
	}
	return filepath.Join(append([]string{d}, rel...)...), nil
}

package shareddir

import (
	"os"
	"path/filepath"
	"testing"
)

func TestFindsSharedBesideRepo(t *testing.T) {
	p, err := Path("DESIGN.md")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("DESIGN.md not at %s: %v", p, err)
	}
}

func TestEnvOverride(t *testing.T) {
	d := t.TempDir()
	t.Setenv(EnvVar, d)
	got, err := Dir()
	if err != nil || got != d {
		t.Fatalf("Dir() = %q, %v; want %q", got, err, d)
	}
	t.Setenv(EnvVar, filepath.Join(d, "missing"))
	if _, err := Dir(); err == nil {
		t.Fatal("missing override directory accepted")
	}
}

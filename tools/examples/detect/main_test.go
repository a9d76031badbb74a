package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/flbq/flbq/runtime/shareddir"
)

func TestDetectWithTheGeneratedPackage(t *testing.T) {
	img, err := shareddir.Path("images", "000000039769.png")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(&out, []string{img}); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if !strings.Contains(s, "model: dp at 4.00 average bits") || !strings.Contains(s, "box [") {
		t.Fatalf("unexpected output:\n%s", s)
	}
	if err := run(&out, []string{"no-such-image.png"}); err == nil {
		t.Fatal("missing image accepted")
	}
}

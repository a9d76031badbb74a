package main

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
)

func TestBenchKernelsParse(t *testing.T) {
	if b, err := parseBits("1-3,8"); err != nil || len(b) != 4 || b[3] != 8 {
		t.Fatalf("parseBits: %v %v", b, err)
	}
	for _, bad := range []string{"0-2", "9", "3-1", "x"} {
		if _, err := parseBits(bad); err == nil {
			t.Fatalf("parseBits(%q) accepted", bad)
		}
	}
	if s, err := parseShape("196x768x2304"); err != nil || s != (benchShape{196, 768, 2304}) {
		t.Fatalf("parseShape: %v %v", s, err)
	}
	for _, bad := range []string{"3x4", "0x1x1", "1x100000x1", "ax1x1"} {
		if _, err := parseShape(bad); err == nil {
			t.Fatalf("parseShape(%q) accepted", bad)
		}
	}
}

func TestBenchKernelsJSON(t *testing.T) {
	var out bytes.Buffer
	err := run([]string{"bench", "kernels", "--bits", "3,8", "--shape", "5x40x20", "--tiers", "all", "--time", "1ms", "--reps", "1", "--json"}, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var r benchReport
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(r.Results) != 2*len(r.Tiers) || len(r.FP32) != 2 {
		t.Fatalf("results %+v", r)
	}
	for _, k := range r.Results {
		if k.GOPS <= 0 || k.Shape != "5x40x20" {
			t.Fatalf("bad result %+v", k)
		}
	}
	out.Reset()
	if err := run([]string{"bench", "kernels", "--bits", "2", "--shape", "1x64x16", "--time", "1ms", "--reps", "1"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "1x64x16") {
		t.Fatalf("table output:\n%s", out.String())
	}
}

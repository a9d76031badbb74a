package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConvertCLI(t *testing.T) {
	out := filepath.Join(t.TempDir(), "m.safetensors")
	td := "../convert/testdata/"
	if _, err := runCLI(t, "convert", "--from", "torchvision", "--config", td+"vit_maskrcnn.config.json", "--out", out, td+"vit_maskrcnn_legacy.pth"); err != nil {
		t.Fatal(err)
	}
	if o, err := runCLI(t, "inspect", "--model", out); err != nil || !strings.Contains(o, "family: vit") {
		t.Fatalf("inspect the converted model: %v\n%s", err, o)
	}
	bad := filepath.Join(t.TempDir(), "bad.safetensors")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--from", "mmdet", "--config", td + "vit_maskrcnn.config.json", "--out", bad, td + "vit_maskrcnn.pth"}, `missing key "backbone.patch_embed.projection.weight"`},
		{[]string{"--from", "timm", "--out", bad, td + "vit_maskrcnn.pth"}, "accepted: torchvision, mmdet, swin-official, detectron2"},
		{[]string{"--from", "torchvision", "--out", bad, td + "vit_maskrcnn.pth"}, "needs --config"},
		{[]string{"--from", "torchvision", "--config", td + "vit_maskrcnn.config.json", "--out", bad, "../torchckpt/testdata/evil.pth"}, "posix.system is not allowed"},
		{[]string{"--from", "torchvision", "--config", td + "vit_maskrcnn.config.json", "--out", bad, "../torchckpt/testdata/zip_state_dict.pth"}, "zip_state_dict.pth"},
	} {
		_, err := runCLI(t, append([]string{"convert"}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.args, err, c.want)
		}
		if _, serr := os.Stat(bad); serr == nil {
			t.Errorf("%v: wrote the output", c.args)
		}
	}
}

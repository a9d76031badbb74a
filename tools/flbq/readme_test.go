package main

import (
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/flbq/flbq/runtime/maskrcnn"
	"github.com/flbq/flbq/runtime/model"
)

// TestREADMEConfigKeys: the README's flbq.config table names every key
// model.Config and maskrcnn.Settings read, and no other.
func TestREADMEConfigKeys(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "### `flbq.config` keys")
	if i < 0 {
		t.Fatal("README has no flbq.config keys section")
	}
	s = s[i:]
	if j := strings.Index(s[4:], "\n#"); j >= 0 {
		s = s[:j+4]
	}
	documented := map[string]bool{}
	key := regexp.MustCompile("`([a-z0-9_]+)`")
	for _, line := range strings.Split(s, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 3 || strings.HasPrefix(strings.TrimSpace(cells[1]), "---") {
			continue
		}
		for _, m := range key.FindAllStringSubmatch(cells[1], -1) {
			documented[m[1]] = true
		}
	}
	read := map[string]bool{"source": true}
	for _, v := range []any{model.Config{}, maskrcnn.Settings{}} {
		tp := reflect.TypeOf(v)
		for k := 0; k < tp.NumField(); k++ {
			if name := strings.Split(tp.Field(k).Tag.Get("json"), ",")[0]; name != "" && name != "-" {
				read[name] = true
			}
		}
	}
	var missing, extra []string
	for k := range read {
		if !documented[k] {
			missing = append(missing, k)
		}
	}
	for k := range documented {
		if !read[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing)+len(extra) > 0 {
		t.Errorf("README flbq.config table: undocumented keys %v, documented keys flbq does not read %v", missing, extra)
	}
}

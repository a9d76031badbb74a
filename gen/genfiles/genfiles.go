// Package genfiles is what the kernel generators share: rendering an avo
// context into assembly and stubs with a fixed printer configuration (so
// that output is byte-identical across runs and machines), and replacing a
// directory's generated files atomically.
package genfiles

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/mmcloughlin/avo/build"
	"github.com/mmcloughlin/avo/pass"
	"github.com/mmcloughlin/avo/printer"

	"github.com/flbq/flbq/runtime/atomicfile"
)

// Asm renders the functions fill declares into Go assembly and its stubs,
// for package pkg, under the build constraint expr ("" for none). The
// printer configuration holds only the generator's name and the package:
// no argv, no paths, no timestamps.
func Asm(generator, pkg, constraint string, fill func(c *build.Context)) (asm, stubs []byte, err error) {
	c := build.NewContext()
	if constraint != "" {
		c.ConstraintExpr(constraint)
	}
	fill(c)
	f, err := c.Result()
	if err != nil {
		return nil, nil, err
	}
	if err := pass.Compile.Execute(f); err != nil {
		return nil, nil, err
	}
	cfg := printer.Config{Name: generator, Pkg: pkg}
	if asm, err = printer.NewGoAsm(cfg).Print(f); err != nil {
		return nil, nil, err
	}
	if stubs, err = printer.NewStubs(cfg).Print(f); err != nil {
		return nil, nil, err
	}
	return asm, stubs, nil
}

// IsGenerated reports whether the file at path starts with header.
func IsGenerated(path, header string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadString('\n')
	return strings.TrimRight(line, "\n") == header
}

// Write puts files (name → content, already fully rendered) into dir, each
// atomically, leaving unchanged files untouched (and their mtimes), then
// removes the files of dir that start with header but are no longer
// generated. Files without the header are never touched.
func Write(dir, header string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(dir, n)
		if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, files[n]) {
			continue
		}
		if err := atomicfile.WriteBytes(p, files[n]); err != nil {
			return err
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if _, keep := files[e.Name()]; keep || e.IsDir() || !IsGenerated(p, header) {
			continue
		}
		if err := os.Remove(p); err != nil {
			return err
		}
	}
	return nil
}

// Stale lists how dir differs from files: files missing or different, and
// files in dir that are not generated any more. Generator tests use it to
// check the committed tree without writing to it.
func Stale(dir string, files map[string][]byte) []string {
	var out []string
	for name, data := range files {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(got, data) {
			out = append(out, name+" is stale or missing")
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if _, ok := files[e.Name()]; !ok {
			out = append(out, "unexpected file "+e.Name())
		}
	}
	sort.Strings(out)
	return out
}

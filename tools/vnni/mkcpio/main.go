// Command mkcpio writes a newc-format cpio archive (a Linux initramfs) of a
// directory tree to standard output, owned by root, plus the device nodes
// /dev/console and /dev/null, so that no root rights or mknod are needed:
//
//	mkcpio DIR > initrd.img
//
// tools/vnni/test-vnni.sh uses it to pack tools/vnni/init and the test
// binaries. Regular files, directories and symbolic links are copied;
// modification times are zeroed so the archive depends only on the contents.
package main

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

const (
	modeDir  = 0o040000
	modeReg  = 0o100000
	modeLink = 0o120000
	modeChr  = 0o020000
)

type writer struct {
	w   *bufio.Writer
	off int64
	ino uint32
}

func (c *writer) pad() error {
	if n := (4 - c.off%4) % 4; n > 0 {
		_, err := c.w.Write(make([]byte, n))
		c.off += n
		return err
	}
	return nil
}

// entry writes one header, the name and data (data nil for none).
func (c *writer) entry(name string, mode, devMajor, devMinor uint32, data []byte) error {
	c.ino++
	nlink := 1
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, devMajor, devMinor, len(name)+1, 0)
	n, err := io.WriteString(c.w, hdr+name+"\x00")
	c.off += int64(n)
	if err != nil {
		return err
	}
	if err := c.pad(); err != nil {
		return err
	}
	n, err = c.w.Write(data)
	c.off += int64(n)
	if err != nil {
		return err
	}
	return c.pad()
}

func run(dir string) error {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)
	c := &writer{w: bufio.NewWriterSize(os.Stdout, 1<<20)}
	seen := map[string]bool{}
	for _, p := range paths {
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		perm := uint32(fi.Mode().Perm())
		switch {
		case fi.IsDir():
			err = c.entry(rel, modeDir|perm, 0, 0, nil)
		case fi.Mode().IsRegular():
			var b []byte
			if b, err = os.ReadFile(p); err == nil {
				err = c.entry(rel, modeReg|perm, 0, 0, b)
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			var t string
			if t, err = os.Readlink(p); err == nil {
				err = c.entry(rel, modeLink|0o777, 0, 0, []byte(t))
			}
		default:
			err = fmt.Errorf("%s: unsupported file type %v", p, fi.Mode().Type())
		}
		if err != nil {
			return err
		}
		seen[rel] = true
	}
	if !seen["dev"] {
		if err := c.entry("dev", modeDir|0o755, 0, 0, nil); err != nil {
			return err
		}
	}
	for _, n := range []struct {
		name         string
		major, minor uint32
	}{{"dev/console", 5, 1}, {"dev/null", 1, 3}} {
		if !seen[n.name] {
			if err := c.entry(n.name, modeChr|0o600, n.major, n.minor, nil); err != nil {
				return err
			}
		}
	}
	if err := c.entry("TRAILER!!!", 0, 0, 0, nil); err != nil {
		return err
	}
	return c.w.Flush()
}

func main() {
	if len(os.Args) != 2 || strings.HasPrefix(os.Args[1], "-") {
		fmt.Fprintln(os.Stderr, "usage: mkcpio DIR > initrd.img")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "mkcpio:", err)
		os.Exit(1)
	}
}

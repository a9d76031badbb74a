package shapes

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncDir makes the files in dir durable: one syncfs(2) of its
// filesystem.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return &os.PathError{Op: "syncfs", Path: dir, Err: err}
	}
	return f.Sync()
}

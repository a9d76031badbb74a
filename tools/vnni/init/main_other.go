//go:build !linux

// Command init is the /init of the Linux initramfs that
// tools/vnni/test-vnni.sh boots under an emulator; it exists only on Linux.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "tools/vnni/init: Linux only (the /init of the emulator's initramfs)")
	os.Exit(2)
}

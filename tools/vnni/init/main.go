//go:build linux

// Command init is the /init of the initramfs that tools/vnni/test-vnni.sh
// boots under the Bochs x86 emulator (AVX-512 VNNI CPU model). It mounts
// /proc, /sys and /dev, attaches itself to the serial console, prints the
// guest CPU's flags, runs every test binary in /vnni/bin with the vnni tier
// required (FLBQ_CPU=vnni FLBQ_TEST_REQUIRE_TIER=vnni) and prints one line
//
//	FLBQ-VNNI-RESULT: PASS
//	FLBQ-VNNI-RESULT: FAIL rc=N (why)
//
// before it powers the machine off. The host script greps the serial log
// for that line. It is not meant to run on a normal system: as any process
// other than pid 1 it refuses to start.
//
// Files it reads, written by the host script:
//
//	/vnni/bin/*   test binaries (static), run in name order
//	/vnni/args    their arguments, one per line (e.g. -test.v)
//	/vnni/cwd/*   for the binary of the same name, the directory to run it
//	              in (its package's place in the tree, holding testdata);
//	              /tmp when absent
//	/vnni/env     extra environment, KEY=VALUE per line (cannot override
//	              FLBQ_CPU or FLBQ_TEST_REQUIRE_TIER)
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

const resultPrefix = "FLBQ-VNNI-RESULT:"

// required lists the /proc/cpuinfo flags the vnni tier needs
// (runtime/backend: avx2, fma, avx512f, avx512bw, avx512vnni).
var required = []string{"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"}

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "tools/vnni/init: this is the /init of the emulator's initramfs; run tools/vnni/test-vnni.sh instead")
		os.Exit(2)
	}
	setup()
	start := time.Now()
	rc, why := run()
	fmt.Printf("flbq-vnni: guest time %.1fs\n", time.Since(start).Seconds())
	if rc == 0 {
		fmt.Println(resultPrefix, "PASS")
	} else {
		fmt.Printf("%s FAIL rc=%d (%s)\n", resultPrefix, rc, why)
	}
	poweroff()
}

// setup mounts the pseudo file systems and makes the serial console the
// standard input, output and error.
func setup() {
	for _, m := range []struct{ dir, fs string }{{"/proc", "proc"}, {"/sys", "sysfs"}, {"/dev", "devtmpfs"}, {"/tmp", "tmpfs"}} {
		os.MkdirAll(m.dir, 0o755)
		if err := syscall.Mount(m.fs, m.dir, m.fs, 0, ""); err != nil && err != syscall.EBUSY {
			fmt.Fprintf(os.Stderr, "flbq-vnni: mount %s: %v\n", m.dir, err)
		}
	}
	for _, dev := range []string{"/dev/ttyS0", "/dev/console"} {
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			continue
		}
		for fd := 0; fd <= 2; fd++ {
			syscall.Dup3(int(f.Fd()), fd, 0)
		}
		break
	}
	// Keep kernel messages (a keyboard probe, say) out of the test output.
	os.WriteFile("/proc/sys/kernel/printk", []byte("1"), 0)
}

// run checks the guest CPU and runs the test binaries; it returns the first
// nonzero exit status and why (0 when every binary passed and the CPU has
// every flag the vnni tier needs).
func run() (int, string) {
	flags, model := cpuinfo()
	fmt.Println("flbq-vnni: cpu model:", model)
	var avx512 []string
	for _, f := range flags {
		if strings.HasPrefix(f, "avx") || f == "fma" {
			avx512 = append(avx512, f)
		}
	}
	fmt.Println("flbq-vnni: cpu flags (avx*/fma):", strings.Join(avx512, " "))
	have := map[string]bool{}
	for _, f := range flags {
		have[f] = true
	}
	var missing []string
	for _, f := range required {
		if !have[f] {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		// Run the tests anyway: FLBQ_TEST_REQUIRE_TIER makes them fail,
		// and their output says why.
		fmt.Println("flbq-vnni: guest CPU lacks", strings.Join(missing, " "))
	} else {
		fmt.Println("flbq-vnni: guest CPU has", strings.Join(required, " "))
	}
	rc, why := runTests()
	if rc == 0 && len(missing) > 0 {
		return 3, "guest CPU lacks " + strings.Join(missing, ",")
	}
	return rc, why
}

// runTests runs the test binaries in name order; it returns the first
// nonzero exit status and why (0 when every binary passed).
func runTests() (int, string) {

	bins, _ := filepath.Glob("/vnni/bin/*")
	sort.Strings(bins)
	if len(bins) == 0 {
		return 4, "no test binaries in /vnni/bin"
	}
	args := lines("/vnni/args")
	env := []string{"PATH=/vnni/bin", "HOME=/tmp", "TMPDIR=/tmp"}
	for _, kv := range lines("/vnni/env") {
		k, _, _ := strings.Cut(kv, "=")
		if k != "FLBQ_CPU" && k != "FLBQ_TEST_REQUIRE_TIER" {
			env = append(env, kv)
		}
	}
	env = append(env, "FLBQ_CPU=vnni", "FLBQ_TEST_REQUIRE_TIER=vnni")
	for _, bin := range bins {
		name := filepath.Base(bin)
		fmt.Printf("flbq-vnni: run %s %s\n", name, strings.Join(args, " "))
		t0 := time.Now()
		cmd := exec.Command(bin, args...)
		cmd.Dir = "/tmp"
		if d := lines("/vnni/cwd/" + name); len(d) > 0 {
			cmd.Dir = d[0]
		}
		cmd.Env = env
		cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
		err := cmd.Run()
		fmt.Printf("flbq-vnni: %s done in %.1fs guest time: %v\n", name, time.Since(t0).Seconds(), errString(err))
		if err != nil {
			rc := 1
			if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() > 0 {
				rc = ee.ExitCode()
			}
			return rc, name + ": " + err.Error()
		}
	}
	return 0, ""
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// cpuinfo returns the first processor's flags and model name.
func cpuinfo() (flags []string, model string) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		fmt.Println("flbq-vnni: /proc/cpuinfo:", err)
		return nil, ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "model name":
			if model == "" {
				model = strings.TrimSpace(v)
			}
		case "flags":
			if flags == nil {
				flags = strings.Fields(v)
			}
		}
	}
	return flags, model
}

// lines returns the non-empty lines of file (nil when it is absent).
func lines(file string) []string {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimRight(l, "\r"); strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// poweroff flushes and switches the machine off (ACPI S5, which ends
// Bochs); if that fails it halts.
func poweroff() {
	os.Stdout.Sync()
	syscall.Sync()
	time.Sleep(200 * time.Millisecond)
	if err := syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Println("flbq-vnni: poweroff:", err)
	}
	syscall.Reboot(syscall.LINUX_REBOOT_CMD_HALT)
	select {}
}

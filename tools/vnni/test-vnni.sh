#!/usr/bin/env bash
# test-vnni.sh — run flbq's int8 kernel tests on the AVX-512 VNNI tier inside
# the Bochs x86 emulator, so a machine without AVX-512 (AVX2-only CI) still
# executes the VNNI assembly. See tools/vnni/README.md.
#
#   tools/vnni/test-vnni.sh [package ...]     (default: ./runtime/kernels;
#                                              patterns like ./runtime/... work)
#
# It builds static test binaries and tools/vnni/init, packs them into an
# initramfs, boots a small Linux kernel (built once from Debian's
# linux-source with tools/vnni/kernel.config) from an ISOLINUX CD image in
# Bochs with an Ice Lake/Tiger Lake CPU model, and reads the guest's serial
# console. The guest runs every test binary with FLBQ_CPU=vnni and
# FLBQ_TEST_REQUIRE_TIER=vnni, so a run that falls back to a lower tier
# fails. Exit status: 0 when the guest printed "FLBQ-VNNI-RESULT: PASS",
# 1 on a test failure, 2 on a setup error, 3 on a time-out or a guest that
# died without a result.
#
# Environment (all optional):
#   VNNI_RUN=regexp      -test.run for every binary (default: all tests)
#   VNNI_SHORT=1         add -test.short
#   VNNI_TESTFLAGS=...   more test flags (space separated)
#   VNNI_TIMEOUT=secs    wall-clock limit for the emulator (default 1800)
#   VNNI_CPU=model       Bochs CPU model (default tigerlake; icelake_u works too)
#   VNNI_MEGS=n          guest memory in MiB (default 1024)
#   VNNI_KERNEL=file     use this bzImage instead of building one
#   VNNI_CACHE=dir       cache (default ${XDG_CACHE_HOME:-~/.cache}/flbq-vnni)
#   VNNI_ENV="K=V ..."   more guest environment (FLBQ_CPU and
#                        FLBQ_TEST_REQUIRE_TIER are always vnni)
#   VNNI_GODEBUG=...     GODEBUG in the guest (default cpu.avx512dq=off)
#   VNNI_CMDLINE=...     more guest kernel parameters
#   VNNI_KEEP_SRC=1      keep the unpacked kernel source and build tree
#   VNNI_KEEP=1          keep the work directory of a passing run
#   GO=go                the go command
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tools/vnni
CACHE=${VNNI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flbq-vnni}
GO=${GO:-go}
TIMEOUT=${VNNI_TIMEOUT:-1800}
CPU_MODEL=${VNNI_CPU:-tigerlake}
MEGS=${VNNI_MEGS:-1024}
# Guest instructions per emulated second. The CPU models report a 2.4 GHz
# TSC; matching it keeps the guest's clocks consistent (and timer
# interrupts rare). It sets guest time only: Bochs runs as fast as it can.
IPS=${VNNI_IPS:-2400000000}
RESULT=FLBQ-VNNI-RESULT
T0=$(date +%s)

log() { printf 'test-vnni: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }
need() { # need COMMAND DEBIAN-PACKAGE
	command -v "$1" >/dev/null 2>&1 || die "'$1' not found: install it with 'apt-get install $2'"
}
need_file() { # need_file PATH DEBIAN-PACKAGE
	[ -e "$1" ] || die "$1 not found: install it with 'apt-get install $2'"
}
elapsed() { echo $(($(date +%s) - T0)); }

[ "$(uname -m)" = x86_64 ] || log "warning: host is $(uname -m); Bochs will emulate x86-64 anyway"
need "$GO" golang
need bochs "bochs bochsbios vgabios"
need xorriso xorriso
need timeout coreutils
BXSHARE=${BXSHARE:-/usr/share/bochs}
need_file "$BXSHARE/BIOS-bochs-latest" bochsbios
need_file "$BXSHARE/VGABIOS-lgpl-latest" vgabios
ISOLINUX_BIN=${ISOLINUX_BIN:-/usr/lib/ISOLINUX/isolinux.bin}
LDLINUX_C32=${LDLINUX_C32:-/usr/lib/syslinux/modules/bios/ldlinux.c32}
need_file "$ISOLINUX_BIN" isolinux
need_file "$LDLINUX_C32" syslinux-common
# Debian's bochs 2.7 has no 'nogui' display; the VNC server display with a
# zero connection timeout runs headless (it listens on a port in 5900-5949).
for d in /usr/lib/x86_64-linux-gnu/bochs/plugins /usr/lib/bochs/plugins ${LTDL_LIBRARY_PATH:-}; do
	[ -e "$d/libbx_rfb_gui.so" ] && break
	d=
done
[ -n "$d" ] || log "warning: Bochs rfb display plugin not found (Debian's bochs package has it)"

mkdir -p "$CACHE"

# --- guest kernel -----------------------------------------------------------
build_kernel() {
	local key src ver deb dir out
	key=$(sha256sum "$HERE/kernel.config" | cut -c1-16)
	out=$CACHE/kernel/bzImage-$key
	if [ -s "$out" ]; then
		KERNEL=$out
		return
	fi
	for t in gcc:gcc make:make flex:flex bison:bison bc:bc xz:xz-utils dpkg-deb:dpkg apt-get:apt; do
		need "${t%%:*}" "${t#*:}"
	done
	[ -e /usr/include/libelf.h ] || [ -e /usr/include/gelf.h ] ||
		die "libelf headers not found (the kernel's objtool needs them): install them with 'apt-get install libelf-dev'"
	src=${VNNI_LINUX_SOURCE:-$(apt-cache depends linux-source 2>/dev/null | awk '/Depends: linux-source-/{print $2; exit}')}
	[ -n "$src" ] || die "cannot tell which linux-source-X.Y package to use; set VNNI_LINUX_SOURCE (e.g. linux-source-6.1)"
	mkdir -p "$CACHE/dl" "$CACHE/src"
	deb=$(ls "$CACHE"/dl/"${src}"_*.deb 2>/dev/null | tail -n1 || true)
	if [ -z "$deb" ]; then
		log "downloading $src (about 140 MB, once)"
		(cd "$CACHE/dl" && apt-get download "$src" 2>&1 | { grep -v '^W: Download is performed unsandboxed' >&2 || true; }) ||
			die "apt-get download $src failed (run 'apt-get update'?)"
		deb=$(ls "$CACHE"/dl/"${src}"_*.deb | tail -n1)
	fi
	ver=${src#linux-source-}
	dir=$CACHE/src/linux-source-$ver
	if [ ! -e "$dir/Makefile" ]; then
		log "unpacking $(basename "$deb")"
		rm -rf "$dir"
		dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/src/linux-source-$ver.tar.xz" | xz -dc | tar -x -C "$CACHE/src"
	fi
	local b=$CACHE/src/build-$key
	log "building the guest kernel ($src, tinyconfig + tools/vnni/kernel.config; a few minutes, once)"
	rm -rf "$b"
	mkdir -p "$b"
	make -s -C "$dir" O="$b" tinyconfig >/dev/null
	"$dir/scripts/kconfig/merge_config.sh" -m -O "$b" "$b/.config" "$HERE/kernel.config" >"$b/merge.log" 2>&1
	make -s -C "$dir" O="$b" olddefconfig >>"$b/merge.log" 2>&1
	local bad=0 l o v
	while IFS= read -r l; do
		case $l in CONFIG_*) ;; *) continue ;; esac
		o=${l%%=*} v=${l#*=}
		if [ "$v" = n ]; then
			grep -q "^$o=" "$b/.config" && { log "kernel config: $o is set, wanted off"; bad=1; }
		else
			grep -qx "$l" "$b/.config" || { log "kernel config: wanted $l, got '$(grep "^$o=" "$b/.config" || echo unset)'"; bad=1; }
		fi
	done <"$HERE/kernel.config"
	[ $bad = 0 ] || die "tools/vnni/kernel.config does not apply to $src"
	if ! make -s -C "$dir" O="$b" -j"$(nproc)" bzImage >"$b/build.log" 2>&1; then
		tail -n 30 "$b/build.log" >&2
		die "kernel build failed (log: $b/build.log)"
	fi
	mkdir -p "$CACHE/kernel"
	cp "$b/arch/x86/boot/bzImage" "$out.tmp" && mv "$out.tmp" "$out"
	cp "$b/.config" "$out.config"
	KERNEL=$out
	log "guest kernel built in $(elapsed)s: $KERNEL"
	# The unpacked tree and build take ~2 GB; the .deb stays for a rebuild.
	[ -n "${VNNI_KEEP_SRC:-}" ] || rm -rf "$b" "$dir"
}
if [ -n "${VNNI_KERNEL:-}" ]; then
	[ -s "$VNNI_KERNEL" ] || die "VNNI_KERNEL=$VNNI_KERNEL: no such file"
	KERNEL=$VNNI_KERNEL
else
	build_kernel
fi

# --- initramfs: /init and the test binaries ----------------------------------
mkdir -p "$CACHE/runs"
# Keep the work directories of the last few runs only.
{ ls -1dt "$CACHE"/runs/run.* 2>/dev/null || true; } | tail -n +6 | while IFS= read -r old; do rm -rf "$old"; done
W=$(mktemp -d "$CACHE/runs/run.XXXXXX")
ln -sfn "$W" "$CACHE/last"
RD=$W/initramfs
mkdir -p "$RD/vnni/bin" "$RD/proc" "$RD/sys" "$RD/dev" "$RD/tmp" "$W/iso/isolinux"

[ $# -gt 0 ] || set -- ./runtime/kernels
cd "$ROOT"
export CGO_ENABLED=0 GOOS=linux GOARCH=amd64 GOFLAGS=${GOFLAGS:-}
# Expand patterns (./runtime/...) to the packages that have tests.
pkgs=$("$GO" list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' "$@") || die "go list $* failed"
[ -n "$pkgs" ] || die "no packages with tests in: $*"
log "building /init and test binaries for: $(echo $pkgs)"
"$GO" build -trimpath -o "$RD/init" ./tools/vnni/init || die "building tools/vnni/init failed"
i=0
for pkg in $pkgs; do
	i=$((i + 1))
	name=$(printf '%02d-%s.test' "$i" "$(basename "$pkg")")
	"$GO" test -c -trimpath -o "$RD/vnni/bin/$name" "$pkg" || die "go test -c $pkg failed"
	[ -s "$RD/vnni/bin/$name" ] || die "$pkg has no tests"
	# go test runs a test binary in its package's directory: recreate that
	# place as /src/<path in the module> with the package's testdata.
	dir=$("$GO" list -f '{{.Dir}}' "$pkg")
	rel=${dir#"$ROOT"/}
	[ "$rel" != "$dir" ] || rel=ext/$(basename "$dir")
	mkdir -p "$RD/src/$rel" "$RD/vnni/cwd"
	echo "/src/$rel" >"$RD/vnni/cwd/$name"
	[ ! -d "$dir/testdata" ] || cp -R "$dir/testdata" "$RD/src/$rel/"
done
{
	echo -test.v
	echo -test.count=1
	echo -test.timeout=2h
	[ -z "${VNNI_RUN:-}" ] || echo "-test.run=$VNNI_RUN"
	[ -z "${VNNI_SHORT:-}" ] || echo -test.short
	for f in ${VNNI_TESTFLAGS:-}; do echo "$f"; done
} >"$RD/vnni/args"
# The Go runtime's own AVX-512 code (Go 1.26's green-tea GC span scanner,
# gated on AVX512DQ+VL+BW+VBMI+BITALG+GFNI) goes wrong under Bochs 2.7 and
# crashes the GC ("found bad pointer in Go heap"); cpu.avx512dq=off turns it
# off for the runtime only. flbq's tier check (x/sys/cpu: avx512f, avx512bw,
# avx512vnni) is unaffected, so the VNNI kernels still run.
{
	echo "GODEBUG=${VNNI_GODEBUG-cpu.avx512dq=off}"
	for kv in ${VNNI_ENV:-}; do echo "$kv"; done
} >"$RD/vnni/env"
GOOS= GOARCH= "$GO" run ./tools/vnni/mkcpio "$RD" >"$W/iso/initrd.img" || die "packing the initramfs failed"

# --- boot CD: ISOLINUX, the kernel, the initramfs ----------------------------
cp "$ISOLINUX_BIN" "$LDLINUX_C32" "$W/iso/isolinux/"
cp "$KERNEL" "$W/iso/vmlinuz"
# clearcpuid: Bochs 2.7 reports the non-compacted XSAVE area size for the
# compacted format, which makes Linux disable XSAVE (and with it AVX and
# AVX-512) when it uses XSAVES or XSAVEC; without them it uses the standard
# format, which Bochs gets right.
cat >"$W/iso/isolinux/isolinux.cfg" <<EOF
DEFAULT flbq
PROMPT 0
TIMEOUT 0
LABEL flbq
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND console=ttyS0,115200 panic=0 clearcpuid=pku,xsaves,xsavec,fsrm ${VNNI_CMDLINE:-}
EOF
xorriso -as mkisofs -quiet -o "$W/boot.iso" -b isolinux/isolinux.bin -c isolinux/boot.cat \
	-no-emul-boot -boot-load-size 4 -boot-info-table "$W/iso" 2>"$W/xorriso.log" ||
	{ cat "$W/xorriso.log" >&2; die "xorriso failed"; }

# --- Bochs --------------------------------------------------------------------
cat >"$W/bochsrc" <<EOF
megs: $MEGS
cpu: model=$CPU_MODEL, count=1, ips=$IPS, reset_on_triple_fault=0
romimage: file=$BXSHARE/BIOS-bochs-latest
vgaromimage: file=$BXSHARE/VGABIOS-lgpl-latest
vga: update_freq=1
ata0-master: type=cdrom, path=$W/boot.iso, status=inserted
boot: cdrom
com1: enabled=1, mode=file, dev=$W/serial.log
display_library: rfb, options="timeout=0"
clock: sync=none, time0=local
log: $W/bochs.log
panic: action=fatal
error: action=report
info: action=report
debug: action=ignore
EOF
# Debian builds Bochs with its debugger, which stops at the first
# instruction: the rc file continues, then quits when the guest powers off.
printf 'continue\nquit\n' >"$W/debugger.rc"
: >"$W/serial.log"

log "booting Bochs ($CPU_MODEL, ${MEGS} MiB; limit ${TIMEOUT}s); work dir $W"
B0=$(date +%s)
bochs -q -f "$W/bochsrc" -rc "$W/debugger.rc" </dev/null >"$W/bochs.out" 2>&1 &
BPID=$!
trap 'kill $BPID 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM
status=
done_at=
while kill -0 $BPID 2>/dev/null; do
	sleep 2
	now=$(date +%s)
	if [ -z "$done_at" ] && grep -qa "^$RESULT:" "$W/serial.log"; then
		done_at=$now
	fi
	if [ -n "$done_at" ] && [ $((now - done_at)) -gt 60 ]; then
		log "guest printed its result but did not power off; stopping Bochs"
		break
	fi
	if [ -z "$done_at" ] && grep -qa "Kernel panic" "$W/serial.log"; then
		sleep 3
		status="kernel panic"
		break
	fi
	if [ $((now - B0)) -ge "$TIMEOUT" ]; then
		status="timed out after ${TIMEOUT}s"
		break
	fi
done
kill $BPID 2>/dev/null || true
wait $BPID 2>/dev/null || true
trap - EXIT INT TERM
secs=$(($(date +%s) - B0))

tr -d '\r' <"$W/serial.log" >"$W/console.log"
line=$(grep -a "^$RESULT:" "$W/console.log" | tail -n1 || true)
echo "---- guest console (tail; full: $W/console.log) ----"
grep -av '^\[ *[0-9.]*\] ' "$W/console.log" | tail -n "${VNNI_TAIL:-60}" || true
echo "----"
grep -a -m1 '^flbq-vnni: cpu flags' "$W/console.log" || true
grep -a '^backend: tier' "$W/console.log" || true
log "emulator ran ${secs}s; total $(elapsed)s"
if [ -z "$line" ]; then
	log "no $RESULT line: ${status:-the emulator exited early}; see $W/bochs.log and $W/bochs.out"
	grep -aE '\]p\[|>>PANIC<<' "$W/bochs.log" "$W/bochs.out" 2>/dev/null | tail -n 5 >&2 || true
	exit 3
fi
echo "$line"
case $line in
"$RESULT: PASS")
	[ -n "${VNNI_KEEP:-}" ] || rm -rf "$W/iso" "$W/initramfs" "$W/boot.iso"
	exit 0
	;;
*) exit 1 ;;
esac

//go:build amd64 && !purego

package backend

import "golang.org/x/sys/cpu"

func compiled(Tier) bool { return true }

// cpuHas reports whether the CPU has every feature in fs (x/sys/cpu names).
func cpuHas(fs []string) bool {
	for _, f := range fs {
		var ok bool
		switch f {
		case "avx2":
			ok = cpu.X86.HasAVX2
		case "fma":
			ok = cpu.X86.HasFMA
		case "avx512f":
			ok = cpu.X86.HasAVX512F
		case "avx512bw":
			ok = cpu.X86.HasAVX512BW
		case "avx512vnni":
			ok = cpu.X86.HasAVX512VNNI
		}
		if !ok {
			return false
		}
	}
	return true
}

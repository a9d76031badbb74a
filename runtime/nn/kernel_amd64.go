//go:build amd64 && !purego

package nn

import (
	"os"

	"golang.org/x/sys/cpu"
)

// useAsm selects the AVX2+FMA micro-kernel; FLBQ_NOASM=1 forces pure Go.
var useAsm = cpu.X86.HasAVX2 && cpu.X86.HasFMA && os.Getenv("FLBQ_NOASM") == ""

// KernelName names the fp32 micro-kernel in use.
var KernelName = map[bool]string{true: "avx2-fma", false: "go"}[useAsm]

//go:noescape
func sgemm6x16(k int, a *float32, lda int, b *float32, c *float32, ldc int, acc bool)

func kernel(k int, a *float32, lda int, b *float32, c *float32, ldc int, acc bool) {
	if useAsm {
		sgemm6x16(k, a, lda, b, c, ldc, acc)
		return
	}
	kernelGo(k, a, lda, b, c, ldc, acc)
}

//go:build !amd64 || purego

package nn

// Only the pure-Go kernels are compiled here, whatever the backend tier.
func fp32AVX2() bool { return false }

// KernelName names the fp32 micro-kernel the active tier runs: always "go"
// in this build.
func KernelName() string { return "go" }

func kernel(_ bool, k int, a *float32, lda int, b *float32, c *float32, ldc int, acc bool) {
	kernelGo(k, a, lda, b, c, ldc, acc)
}

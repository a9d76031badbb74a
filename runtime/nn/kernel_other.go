//go:build !amd64 || purego

package nn

// KernelName names the fp32 micro-kernel in use.
const KernelName = "go"

func kernel(k int, a *float32, lda int, b *float32, c *float32, ldc int, acc bool) {
	kernelGo(k, a, lda, b, c, ldc, acc)
}

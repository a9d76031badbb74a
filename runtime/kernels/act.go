package kernels

import (
	"fmt"

	"github.com/flbq/flbq/runtime/kernels/kabi"
	"github.com/flbq/flbq/runtime/qformat"
)

// Activations is an int8 activation matrix quantized per row: row m is
// Q[m·KP : m·KP+K] (zero-padded to KP), with x ≈ Scale[m]·q and Sum[m] = Σ q.
type Activations struct {
	M, K, KP int
	Q        []int8
	Scale    []float32
	Sum      []int32
}

// resize makes a hold M rows of K values, reusing its buffers.
func (a *Activations) resize(M, K int) {
	a.M, a.K, a.KP = M, K, qformat.PaddedK(K)
	n := M * a.KP
	if cap(a.Q) < n {
		a.Q = make([]int8, n)
	}
	a.Q = a.Q[:n]
	if cap(a.Scale) < M {
		a.Scale = make([]float32, M)
		a.Sum = make([]int32, M)
	}
	a.Scale, a.Sum = a.Scale[:M], a.Sum[:M]
}

// QuantizeActivations quantizes x (M rows of K float32) into a with the
// active tier. It is the exact activation quantizer of the kernels (int8,
// symmetric, one scale per row, see qformat.QuantizeRow); calibration's
// fake-quant must use it (or FakeQuantize) so that curves describe what
// ships. Inputs must be finite.
func QuantizeActivations(a *Activations, x []float32, M, K int) error {
	if M < 0 || K <= 0 || len(x) < M*K {
		return fmt.Errorf("kernels: activations: len(x) = %d for %d×%d", len(x), M, K)
	}
	a.resize(M, K)
	quantizeRows(table(), a, x, 0, M)
	return nil
}

func quantizeRows(t *kabi.Table, a *Activations, x []float32, m0, m1 int) {
	K, KP := a.K, a.KP
	t.QuantRows(a.Q[m0*KP:m1*KP], x[m0*K:m1*K], K, m1-m0, a.Scale[m0:m1], a.Sum[m0:m1])
}

// FakeQuantize replaces every row of x (M×K) by its int8 quantization
// dequantized again (scale·q), exactly as the kernels see it.
func FakeQuantize(dst, x []float32, M, K int) error {
	var a Activations
	if err := QuantizeActivations(&a, x, M, K); err != nil {
		return err
	}
	if len(dst) < M*K {
		return fmt.Errorf("kernels: fake-quant: len(dst) = %d for %d×%d", len(dst), M, K)
	}
	for m := 0; m < M; m++ {
		for k := 0; k < K; k++ {
			dst[m*K+k] = a.Scale[m] * float32(a.Q[m*a.KP+k])
		}
	}
	return nil
}

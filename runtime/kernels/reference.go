package kernels

import (
	"fmt"
	"math"

	"github.com/flbq/flbq/runtime/qformat"
)

// ReferenceAccumulate is the oracle for the integer part of the kernel: it
// unpacks W with qformat (scalar code), and for every m, n sums
// (q[n,k] − z[n])·x[m,k] in int64, failing if a sum leaves int32.
func ReferenceAccumulate(w *qformat.Matrix, xq []int8, M int) ([]int32, error) {
	N, K := w.N, w.K
	if len(xq) < M*K {
		return nil, fmt.Errorf("kernels: reference: len(x) = %d for %d×%d", len(xq), M, K)
	}
	q := w.Unpack()
	out := make([]int32, M*N)
	for m := 0; m < M; m++ {
		for n := 0; n < N; n++ {
			var s int64
			for k := 0; k < K; k++ {
				s += (int64(q[n*K+k]) - int64(w.Zero[n])) * int64(xq[m*K+k])
			}
			if s > math.MaxInt32 || s < math.MinInt32 {
				return nil, fmt.Errorf("kernels: reference: accumulator %d overflows int32 at m=%d n=%d", s, m, n)
			}
			out[m*N+n] = int32(s)
		}
	}
	return out, nil
}

// ReferenceForward is the oracle of QLinear.Forward: activations quantized
// row by row with qformat.QuantizeRow, accumulators from ReferenceAccumulate,
// and the same fp32 epilogue. It also returns the quantized activations
// (M×K, unpadded) and the accumulators.
func ReferenceForward(w *qformat.Matrix, bias []float32, x []float32, M int) (y []float32, xq []int8, acc []int32, err error) {
	N, K := w.N, w.K
	xq = make([]int8, M*K)
	sx := make([]float32, M)
	for m := 0; m < M; m++ {
		sx[m], _ = qformat.QuantizeRow(xq[m*K:(m+1)*K], x[m*K:(m+1)*K])
	}
	acc, err = ReferenceAccumulate(w, xq, M)
	if err != nil {
		return nil, nil, nil, err
	}
	y = make([]float32, M*N)
	for m := 0; m < M; m++ {
		for n := 0; n < N; n++ {
			var b float32
			if bias != nil {
				b = bias[n]
			}
			y[m*N+n] = output(acc[m*N+n], sx[m], w.Scale[n], b)
		}
	}
	return y, xq, acc, nil
}

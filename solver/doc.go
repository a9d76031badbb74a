// Package solver holds the F-LBQ error curves and bit allocations and their
// files (curves.json, "flbq.curves/v1"; alloc.json, "flbq.alloc/v1").
//
// A quantization unit is one channel group of one backbone linear layer, or a
// whole layer at layer granularity. Its error curve gives, for every bit-width
// in Curves.Bits, the distortion of the backbone's output features when that
// unit alone is quantized at that width. An allocation assigns one bit-width
// to every unit.
//
// Readers are strict: they reject unknown formats, unknown or missing fields,
// NaN, infinite or negative distortions, duplicate units, empty unit lists and
// bit-widths outside 1..8, with an error that names the file and the unit or
// field. Writers go through runtime/atomicfile and never leave a partial file.
//
// The solvers themselves (F-LBQ-LG and F-LBQ-DP) live in solver/allocate; the
// synthetic curves used by tests, benchmarks and the demo in tools/data/curvesynth.
package solver

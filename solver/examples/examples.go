// Package examples bundles example curves files so the demo and the docs
// work on a fresh checkout. Each file is reproducible from tools/data/curvesynth
// (a test checks it byte for byte).
package examples

import _ "embed"

// SwinTG32 is `flbq curves synth --arch swin-t --group-size 32 --seed 1`.
//
//go:embed swin-t-g32.curves.json
var SwinTG32 []byte

// SwinTG32Name is the file's name in this directory.
const SwinTG32Name = "solver/examples/swin-t-g32.curves.json"

// Command genkernels writes the generated quantized matmul kernels
// (generated/kernels) from the gen/kernels generator library.
//
//	go run ./gen/cmd/genkernels -out generated/kernels
//
// generated/kernels/doc.go runs it through go generate.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/flbq/flbq/gen/kernels"
)

func main() {
	// A private flag set: avo's build package registers its own global flags.
	fs := flag.NewFlagSet("genkernels", flag.ExitOnError)
	out := fs.String("out", ".", "output directory")
	fs.Parse(os.Args[1:])
	if err := kernels.Write(*out); err != nil {
		fmt.Fprintf(os.Stderr, "genkernels: %v\n", err)
		os.Exit(1)
	}
}

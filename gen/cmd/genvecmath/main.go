// Command genvecmath writes the generated fp32 element-wise kernels
// (generated/vecmath) from the gen/vecmath generator library.
//
//	go run ./gen/cmd/genvecmath -out generated/vecmath
//
// generated/vecmath/doc.go runs it through go generate.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/flbq/flbq/gen/vecmath"
)

func main() {
	// A private flag set: avo's build package registers its own global flags.
	fs := flag.NewFlagSet("genvecmath", flag.ExitOnError)
	out := fs.String("out", ".", "output directory")
	fs.Parse(os.Args[1:])
	if err := vecmath.Write(*out); err != nil {
		fmt.Fprintf(os.Stderr, "genvecmath: %v\n", err)
		os.Exit(1)
	}
}

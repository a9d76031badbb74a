package kernels

import (
	"fmt"

	. "github.com/dave/jennifer/jen"

	"github.com/flbq/flbq/runtime/qformat"
)

const qf = "github.com/flbq/flbq/runtime/qformat"

func q(name string) *Statement { return Qual(qf, name) }

const (
	kabi = "github.com/flbq/flbq/runtime/kernels/kabi"
	be   = "github.com/flbq/flbq/runtime/backend"
)

func k(name string) *Statement { return Qual(kabi, name) }

func hex(v int) *Statement { return Id(fmt.Sprintf("%#02x", v)) }

// puregoFile emits the readable pure-Go kernels: one unpacker per b, the dot
// kernel, the activation quantizer and the PureGo tier.
func puregoFile(f *File) {
	for b := qformat.MinBits; b <= qformat.MaxBits; b++ {
		planes, shifts, offs := qformat.Planes(b), qformat.PlaneShifts(b), qformat.PlaneOffsets(b)
		name := fmt.Sprintf("unpackB%dGo", b)
		bb := qformat.BlockBytes(b)
		f.Commentf("%s unpacks %d-bit tiles (planes %v at bit offsets %v).", name, b, planes, shifts)
		var body []Code
		for g := 0; g < qformat.GroupsPerBlock; g++ {
			var expr *Statement
			for pi, p := range planes {
				per := 8 / p
				blk := offs[pi] + g/per*qformat.GroupBytes
				r := (g%per)*p - shifts[pi]
				e := Id("s").Index(Lit(blk).Op("+").Id("c"))
				switch {
				case r > 0:
					e = e.Op(">>").Lit(r)
				case r < 0:
					e = e.Op("<<").Lit(-r)
				}
				if b < 8 {
					e = e.Op("&").Add(hex((1<<p - 1) << shifts[pi]))
				}
				if expr == nil {
					expr = e
				} else {
					expr = expr.Op("|").Add(e)
				}
			}
			body = append(body, Id("d").Index(Lit(g*qformat.GroupBytes).Op("+").Id("c")).Op("=").Add(expr))
		}
		f.Func().Id(name).Params(List(Id("dst"), Id("src")).Index().Byte(), Id("blocks").Int()).Block(
			k("CheckUnpack").Call(Lit(name), Id("dst"), Id("src"), Id("blocks"), Lit(b)),
			For(Id("sb").Op(":=").Lit(0), Id("sb").Op("<").Id("blocks"), Id("sb").Op("++")).Block(
				Id("s").Op(":=").Parens(Op("*").Index(Lit(bb)).Byte()).Parens(Id("src").Index(Id("sb").Op("*").Lit(bb).Op(":"))),
				Id("d").Op(":=").Parens(Op("*").Index(Lit(qformat.BlockWeights)).Byte()).Parens(Id("dst").Index(Id("sb").Op("*").Lit(qformat.BlockWeights).Op(":"))),
				For(Id("c").Op(":=").Lit(0), Id("c").Op("<").Lit(qformat.GroupBytes), Id("c").Op("++")).Block(body...),
			),
		)
		f.Line()
	}

	unp := Dict{}
	dots := Dict{}
	fused := Dict{}
	for b := qformat.MinBits; b <= qformat.MaxBits; b++ {
		unp[Lit(b)] = Id(fmt.Sprintf("unpackB%dGo", b))
		dots[Lit(b)] = k("DotGo")
		name := fmt.Sprintf("fusedB%dGo", b)
		f.Commentf("%s is the pure-Go fused kernel of %d-bit tiles.", name, b)
		f.Func().Id(name).Params(Id("acc").Index().Int32(), Id("src").Index().Byte(), Id("x").Index().Int8(), List(Id("ldx"), Id("rows"), Id("blocks")).Int()).Block(
			k("FusedGo").Call(Id(fmt.Sprintf("unpackB%dGo", b)), Lit(b), Id("acc"), Id("src"), Id("x"), Id("ldx"), Id("rows"), Id("blocks")),
		)
		f.Line()
		fused[Lit(b)] = Id(name)
	}
	f.Comment("PureGo is the portable tier: readable Go, any architecture.")
	f.Var().Id("PureGo").Op("=").Add(k("Table")).Values(Dict{
		Id("Tier"):      Qual(be, "PureGo"),
		Id("Rows"):      Lit(1),
		Id("Unpack"):    Index(q("MaxBits").Op("+").Lit(1)).Add(k("UnpackFunc")).Values(unp),
		Id("Dot"):       Index(q("MaxBits").Op("+").Lit(1)).Add(k("DotFunc")).Values(dots),
		Id("Fused"):     Index(q("MaxBits").Op("+").Lit(1)).Add(k("FusedFunc")).Values(fused),
		Id("MaxAbs"):    q("MaxAbs"),
		Id("QuantRow"):  k("QuantRowGo"),
		Id("QuantRows"): k("QuantRowsGo"),
		Id("Epilogue"):  k("EpilogueGo"),
	})
}

// wrappersFile emits the length-checking Go wrappers around the assembly and
// the AVX2 and VNNI tiers (amd64, !purego).
func wrappersFile(f *File) {
	wrapUnpack := func(isa string, b int) string {
		name := fmt.Sprintf("unpackB%d%s", b, isa)
		f.Commentf("%s checks lengths and calls %sAsm.", name, name)
		f.Func().Id(name).Params(List(Id("dst"), Id("src")).Index().Byte(), Id("blocks").Int()).Block(
			k("CheckUnpack").Call(Lit(name), Id("dst"), Id("src"), Id("blocks"), Lit(b)),
			If(Id("blocks").Op(">").Lit(0)).Block(
				Id(name+"Asm").Call(Op("&").Id("dst").Index(Lit(0)), Op("&").Id("src").Index(Lit(0)), Id("blocks")),
			),
		)
		f.Line()
		return name
	}
	wrapDot := func(name string) {
		f.Commentf("%s checks lengths and calls %sAsm.", name, name)
		f.Func().Id(name).Params(Id("acc").Index().Int32(), Id("w").Index().Byte(), Id("x").Index().Int8(), List(Id("ldx"), Id("rows"), Id("groups")).Int()).Block(
			k("CheckDot").Call(Lit(name), Id("acc"), Id("w"), Id("x"), Id("ldx"), Id("rows"), Id("groups")),
			If(Id("rows").Op(">").Lit(0).Op("&&").Id("groups").Op(">").Lit(0)).Block(
				Id(name+"Asm").Call(Op("&").Id("acc").Index(Lit(0)), Op("&").Id("w").Index(Lit(0)), Op("&").Id("x").Index(Lit(0)), Id("ldx"), Id("rows"), Id("groups")),
			),
		)
		f.Line()
	}
	wrapFused := func(b int) string {
		name := fmt.Sprintf("fusedB%dAVX2", b)
		f.Commentf("%s checks lengths and calls %sAsm.", name, name)
		f.Func().Id(name).Params(Id("acc").Index().Int32(), Id("src").Index().Byte(), Id("x").Index().Int8(), List(Id("ldx"), Id("rows"), Id("blocks")).Int()).Block(
			k("CheckFused").Call(Lit(name), Id("acc"), Id("src"), Id("x"), Id("ldx"), Id("rows"), Id("blocks"), Lit(b)),
			If(Id("rows").Op(">").Lit(0).Op("&&").Id("blocks").Op(">").Lit(0)).Block(
				Id(name+"Asm").Call(Op("&").Id("acc").Index(Lit(0)), Op("&").Id("src").Index(Lit(0)), Op("&").Id("x").Index(Lit(0)), Id("ldx"), Id("rows"), Id("blocks")),
			),
		)
		f.Line()
		return name
	}
	for _, fl := range Dot16Flushes {
		name := fmt.Sprintf("dot16F%dAVX2", fl)
		f.Commentf("%s checks lengths, runs %sAsm on whole superblocks and finishes", name, name)
		f.Comment("the remaining k-groups with dotAVX2.")
		f.Func().Id(name).Params(Id("acc").Index().Int32(), Id("w").Index().Byte(), Id("x").Index().Int8(), List(Id("ldx"), Id("rows"), Id("groups")).Int()).Block(
			k("CheckDot").Call(Lit(name), Id("acc"), Id("w"), Id("x"), Id("ldx"), Id("rows"), Id("groups")),
			Id("nb").Op(":=").Id("groups").Op("/").Qual(qf, "GroupsPerBlock"),
			If(Id("rows").Op(">").Lit(0).Op("&&").Id("nb").Op(">").Lit(0)).Block(
				Id(name+"Asm").Call(Op("&").Id("acc").Index(Lit(0)), Op("&").Id("w").Index(Lit(0)), Op("&").Id("x").Index(Lit(0)), Id("ldx"), Id("rows"), Id("nb")),
			),
			If(Id("g0").Op(":=").Id("nb").Op("*").Qual(qf, "GroupsPerBlock"), Id("g0").Op("<").Id("groups")).Block(
				Id("dotAVX2").Call(Id("acc"), Id("w").Index(Id("g0").Op("*").Qual(qf, "GroupBytes").Op(":")), Id("x").Index(Id("g0").Op("*").Qual(qf, "KGroup").Op(":")), Id("ldx"), Id("rows"), Id("groups").Op("-").Id("g0")),
			),
		)
		f.Line()
	}
	wrapDot("dotAVX2")
	wrapDot("dotSignedAVX2")
	wrapDot("dotVNNI")

	f.Comment("maxAbsAVX2 runs the assembly on whole blocks of 32 and finishes the tail in Go.")
	f.Func().Id("maxAbsAVX2").Params(Id("x").Index().Float32()).Float32().Block(
		Id("n").Op(":=").Len(Id("x")).Op("&^").Lit(31),
		Id("m").Op(":=").Qual(qf, "MaxAbs").Call(Id("x").Index(Id("n").Op(":"))),
		If(Id("n").Op(">").Lit(0)).Block(
			Id("m").Op("=").Max(Id("m"), Id("maxAbsAVX2Asm").Call(Op("&").Id("x").Index(Lit(0)), Id("n"))),
		),
		Return(Id("m")),
	)
	f.Line()
	f.Comment("quantRowAVX2 runs the assembly on whole blocks of 32 and finishes the tail in Go.")
	f.Func().Id("quantRowAVX2").Params(Id("dst").Index().Int8(), Id("x").Index().Float32(), Id("inv").Float32()).Int32().Block(
		Id("dst").Op("=").Id("dst").Index(Op(":").Len(Id("x"))),
		Id("n").Op(":=").Len(Id("x")).Op("&^").Lit(31),
		Id("sum").Op(":=").Add(k("QuantRowGo")).Call(Id("dst").Index(Id("n").Op(":")), Id("x").Index(Id("n").Op(":")), Id("inv")),
		If(Id("n").Op(">").Lit(0)).Block(
			Id("sum").Op("+=").Id("quantRowAVX2Asm").Call(Op("&").Id("dst").Index(Lit(0)), Op("&").Id("x").Index(Lit(0)), Id("n"), Id("inv")),
		),
		Return(Id("sum")),
	)
	f.Line()

	f.Comment("quantRowsAVX2 quantizes whole rows with the assembly: quantRows8AVX2Asm for")
	f.Comment("short rows of a multiple of 8 values, else row by row; a row's last k mod 32")
	f.Comment("values go through a zero-padded 32-value copy on the stack (zeros change neither")
	f.Comment("max|x| nor the sum and quantize to the zero padding).")
	f.Func().Id("quantRowsAVX2").Params(Id("q").Index().Int8(), Id("x").Index().Float32(), List(Id("k"), Id("rows")).Int(), Id("scale").Index().Float32(), Id("sum").Index().Int32()).Block(
		k("CheckQuantRows").Call(Id("q"), Id("x"), Id("k"), Id("rows"), Id("scale"), Id("sum")),
		Id("kp").Op(":=").Qual(qf, "PaddedK").Call(Id("k")),
		If(Id("rows").Op(">").Lit(0).Op("&&").Id("k").Op("%").Lit(8).Op("==").Lit(0).Op("&&").Id("k").Op("<").Lit(QuantRows8MaxK)).Block(
			Comment("Short rows: one call for the whole matrix (no per-row call overhead)."),
			Id("quantRows8AVX2Asm").Call(Op("&").Id("q").Index(Lit(0)), Op("&").Id("x").Index(Lit(0)), Id("k"), Id("kp"), Id("rows"), Op("&").Id("scale").Index(Lit(0)), Op("&").Id("sum").Index(Lit(0))),
			Return(),
		),
		Id("n").Op(":=").Id("k").Op("&^").Lit(31),
		Var().Id("tx").Index(Lit(32)).Float32(),
		For(Id("m").Op(":=").Lit(0), Id("m").Op("<").Id("rows"), Id("m").Op("++")).Block(
			Id("xr").Op(":=").Id("x").Index(Id("m").Op("*").Id("k").Op(":").Parens(Id("m").Op("+").Lit(1)).Op("*").Id("k")),
			Id("qr").Op(":=").Id("q").Index(Id("m").Op("*").Id("kp").Op(":").Parens(Id("m").Op("+").Lit(1)).Op("*").Id("kp")),
			Var().Id("mx").Float32(),
			If(Id("n").Op(">").Lit(0)).Block(
				Id("mx").Op("=").Id("maxAbsAVX2Asm").Call(Op("&").Id("xr").Index(Lit(0)), Id("n")),
			),
			If(Id("n").Op("<").Id("k")).Block(
				Id("clear").Call(Id("tx").Index(Id("copy").Call(Id("tx").Index(Op(":")), Id("xr").Index(Id("n").Op(":"))).Op(":"))),
				Id("mx").Op("=").Max(Id("mx"), Id("maxAbsAVX2Asm").Call(Op("&").Id("tx").Index(Lit(0)), Lit(32))),
			),
			List(Id("inv"), Id("sc")).Op(":=").Qual(qf, "ActInv").Call(Id("mx")),
			Var().Id("sm").Int32(),
			If(Id("n").Op(">").Lit(0)).Block(
				Id("sm").Op("=").Id("quantRowAVX2Asm").Call(Op("&").Id("qr").Index(Lit(0)), Op("&").Id("xr").Index(Lit(0)), Id("n"), Id("inv")),
			),
			If(Id("n").Op("<").Id("k")).Block(
				Comment("kp = n+32: the padded tail fills the row exactly."),
				Id("sm").Op("+=").Id("quantRowAVX2Asm").Call(Op("&").Id("qr").Index(Id("n")), Op("&").Id("tx").Index(Lit(0)), Lit(32), Id("inv")),
			),
			List(Id("scale").Index(Id("m")), Id("sum").Index(Id("m"))).Op("=").List(Id("sc"), Id("sm")),
		),
	)
	f.Line()
	for _, isa := range []string{"AVX2", "VNNI"} {
		f.Comment("epilogue" + isa + " checks lengths and calls epilogue" + isa + "Asm.")
		f.Func().Id("epilogue"+isa).Params(Id("y").Index().Float32(), Id("ldy").Int(), Id("acc").Index().Int32(), Id("rows").Int(), Id("sum").Index().Int32(), Id("sx").Index().Float32(), Id("zs").Index().Int32(), List(Id("sw"), Id("bias")).Index().Float32()).Block(
			k("CheckEpilogue").Call(Id("y"), Id("ldy"), Id("acc"), Id("rows"), Id("sum"), Id("sx"), Id("zs"), Id("sw"), Id("bias")),
			If(Id("rows").Op(">").Lit(0)).Block(
				Id("epilogue"+isa+"Asm").Call(Op("&").Id("y").Index(Lit(0)), Id("ldy"), Op("&").Id("acc").Index(Lit(0)), Id("rows"), Op("&").Id("sum").Index(Lit(0)), Op("&").Id("sx").Index(Lit(0)), Op("&").Id("zs").Index(Lit(0)), Op("&").Id("sw").Index(Lit(0)), Op("&").Id("bias").Index(Lit(0))),
			),
		)
		f.Line()
	}
	var fusedNames [FusedMaxBits + 1]string
	for b := qformat.MinBits; b <= FusedMaxBits; b++ {
		fusedNames[b] = wrapFused(b)
	}
	for _, isa := range []string{"AVX2", "VNNI"} {
		unp := Dict{}
		dots := Dict{}
		for b := qformat.MinBits; b <= qformat.MaxBits; b++ {
			unp[Lit(b)] = Id(wrapUnpack(isa, b))
			if isa == "AVX2" && b == 8 {
				dots[Lit(b)] = Id("dotSignedAVX2")
			} else if fl := Dot16Flush(b); isa == "AVX2" && fl > 0 {
				dots[Lit(b)] = Id(fmt.Sprintf("dot16F%dAVX2", fl))
			} else {
				dots[Lit(b)] = Id("dot" + isa)
			}
		}
		d := Dict{
			Id("Unpack"):    Index(q("MaxBits").Op("+").Lit(1)).Add(k("UnpackFunc")).Values(unp),
			Id("MaxAbs"):    Id("maxAbsAVX2"),
			Id("QuantRow"):  Id("quantRowAVX2"),
			Id("QuantRows"): Id("quantRowsAVX2"),
			Id("Epilogue"):  Id("epilogue" + isa),
			Id("Peak"):      Id("peak" + isa + "Asm"),
		}
		// The fused AVX2 kernels (b ≤ FusedMaxBits, unsigned weights, exact
		// int32 sums) serve the VNNI tier too: on few rows, unpacking in
		// registers beats VNNI's Unpack+Dot (1×4096→1024 GEMV, b = 2:
		// 2.3× faster, BenchmarkQLinear thread CPU time).
		fused := Dict{}
		for b := qformat.MinBits; b <= FusedMaxBits; b++ {
			fused[Lit(b)] = Id(fusedNames[b])
		}
		d[Id("Fused")] = Index(q("MaxBits").Op("+").Lit(1)).Add(k("FusedFunc")).Values(fused)
		if isa == "AVX2" {
			d[Id("Tier")] = Qual(be, "AVX2")
			d[Id("Rows")] = Lit(AVX2Rows)
			d[Id("WeightOffset")] = Index(q("MaxBits").Op("+").Lit(1)).Int32().Values(Dict{Lit(8): Lit(128)})
			d[Id("PeakMACs")] = Lit(PeakMACs("avx2"))
			f.Comment("AVX2 is the VPMADDUBSW+VPMADDWD tier (8-bit tiles are unpacked as q−128).")
		} else {
			d[Id("Tier")] = Qual(be, "VNNI")
			d[Id("Rows")] = Lit(VNNIRows)
			d[Id("PeakMACs")] = Lit(PeakMACs("vnni"))
			f.Comment("VNNI is the AVX-512 VNNI (VPDPBUSD) tier.")
		}
		d[Id("Dot")] = Index(q("MaxBits").Op("+").Lit(1)).Add(k("DotFunc")).Values(dots)
		f.Var().Id(isa).Op("=").Add(k("Table")).Values(d)
		f.Line()
	}
}

func dispatchFile(f *File, tiers ...string) {
	f.Comment("Tables lists the kernel tables compiled into this build, best tier first;")
	f.Comment("runtime/kernels runs the one of the active backend tier.")
	var vals []Code
	for _, t := range tiers {
		vals = append(vals, Op("&").Id(t))
	}
	f.Var().Id("Tables").Op("=").Index().Op("*").Add(k("Table")).Values(vals...)
}

func docFile(f *File) {
	f.Comment("//go:generate go run ../../gen/cmd/genkernels")
}

// QuantRows8MaxK bounds the row length that the AVX2 tier quantizes with the
// whole-matrix quantRows8 kernel (eight values per step, one max chain);
// longer rows use the 32-wide row kernels, whose per-row overhead they
// amortize.
const QuantRows8MaxK = 256

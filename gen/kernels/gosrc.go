package kernels

import (
	"fmt"

	. "github.com/dave/jennifer/jen"

	"github.com/flbq/flbq/runtime/qformat"
)

const qf = "github.com/flbq/flbq/runtime/qformat"

func q(name string) *Statement { return Qual(qf, name) }

func hex(v int) *Statement { return Id(fmt.Sprintf("%#02x", v)) }

// tierFile emits the Tier type and the length checks shared by all tiers.
func tierFile(f *File) {
	defer checkEpilogueFunc(f)
	defer checkFusedFunc(f)
	defer checkQuantRowsFunc(f)
	f.Comment("UnpackFunc unpacks blocks superblocks of one tile into the byte layout of")
	f.Comment("qformat: k-group g of the tile at dst[g·64 : g·64+64].")
	f.Type().Id("UnpackFunc").Func().Params(Id("dst"), Id("src").Index().Byte(), Id("blocks").Int())
	f.Line()
	f.Comment("DotFunc accumulates acc[r·16+j] += Σ_{g<groups} Σ_{i<4} w[g·64+j·4+i]·x[r·ldx+g·4+i]")
	f.Comment("for r < rows and j < 16. x must lie in [−127, 127].")
	f.Type().Id("DotFunc").Func().Params(Id("acc").Index().Int32(), Id("w").Index().Byte(), Id("x").Index().Int8(), List(Id("ldx"), Id("rows"), Id("groups")).Int())
	f.Line()
	f.Comment("FusedFunc accumulates acc[r·16+j] += Σ_{k<blocks·32} (q[j,k]−WeightOffset)·x[r·ldx+k]")
	f.Comment("for r < rows and j < 16, reading blocks packed superblocks of one tile (src)")
	f.Comment("without an unpacked buffer. x must lie in [−127, 127].")
	f.Type().Id("FusedFunc").Func().Params(Id("acc").Index().Int32(), Id("src").Index().Byte(), Id("x").Index().Int8(), List(Id("ldx"), Id("rows"), Id("blocks")).Int())
	f.Line()
	f.Comment("Tier is one instruction-set tier of the generated kernels.")
	f.Type().Id("Tier").Struct(
		Comment("Name is \"vnni\", \"avx2\" or \"purego\"."),
		Id("Name").String(),
		Comment("Requires lists the x86 features the tier needs (x/sys/cpu names)."),
		Id("Requires").Index().String(),
		Comment("Rows is the register blocking over activation rows of Dot."),
		Id("Rows").Int(),
		Comment("Unpack[b] unpacks b-bit tiles."),
		Id("Unpack").Index(q("MaxBits").Op("+").Lit(1)).Id("UnpackFunc"),
		Comment("Dot[b] is the dot micro-kernel for tiles unpacked by Unpack[b]."),
		Id("Dot").Index(q("MaxBits").Op("+").Lit(1)).Id("DotFunc"),
		Comment("Fused[b], when not nil, unpacks b-bit tiles in registers and accumulates"),
		Comment("them in one pass (preferred over Unpack[b]+Dot[b]; same WeightOffset)."),
		Id("Fused").Index(q("MaxBits").Op("+").Lit(1)).Id("FusedFunc"),
		Comment("WeightOffset[b] is subtracted from q by Unpack[b]: Dot[b] computes"),
		Comment("Σ(q−WeightOffset[b])·x, so callers use the zero point z−WeightOffset[b]."),
		Id("WeightOffset").Index(q("MaxBits").Op("+").Lit(1)).Int32(),
		Comment("MaxAbs returns max |x[i]| (bit-exact with qformat.MaxAbs)."),
		Id("MaxAbs").Func().Params(Id("x").Index().Float32()).Float32(),
		Comment("QuantRow writes dst[i] = qformat.QuantizeAct(x[i], inv) for i < len(x) and"),
		Comment("returns their sum (bit-exact with qformat)."),
		Id("QuantRow").Func().Params(Id("dst").Index().Int8(), Id("x").Index().Float32(), Id("inv").Float32()).Int32(),
		Comment("QuantRows quantizes rows rows of x (row m at x[m·k:], k values) into q (row m"),
		Comment("at q[m·kp:], kp = qformat.PaddedK(k), padding zeroed) with scale[m] and sum[m],"),
		Comment("bit-exact with qformat.QuantizeRow row by row."),
		Id("QuantRows").Func().Params(Id("q").Index().Int8(), Id("x").Index().Float32(), List(Id("k"), Id("rows")).Int(), Id("scale").Index().Float32(), Id("sum").Index().Int32()),
		Comment("Epilogue writes the fp32 outputs of rows rows of one full tile:"),
		Comment("y[r·ldy+j] = float32(acc[r·16+j] − zs[j]·sum[r])·(sx[r]·sw[j]) + bias[j]."),
		Id("Epilogue").Func().Params(Id("y").Index().Float32(), Id("ldy").Int(), Id("acc").Index().Int32(), Id("rows").Int(), Id("sum").Index().Int32(), Id("sx").Index().Float32(), Id("zs").Index().Int32(), List(Id("sw"), Id("bias")).Index().Float32()),
		Comment("Peak, when not nil, runs a register-only int8 multiply-accumulate loop"),
		Comment("of iters iterations of PeakMACs multiply-accumulates each."),
		Id("Peak").Func().Params(Id("iters").Int()),
		Id("PeakMACs").Int(),
	)
	f.Line()
	f.Func().Id("checkUnpack").Params(Id("name").String(), List(Id("dst"), Id("src")).Index().Byte(), List(Id("blocks"), Id("b")).Int()).Block(
		If(Id("blocks").Op("<").Lit(0).Op("||").Len(Id("src")).Op("<").Id("blocks").Op("*").Id("b").Op("*").Qual(qf, "GroupBytes").Op("||").
			Len(Id("dst")).Op("<").Id("blocks").Op("*").Qual(qf, "BlockWeights")).Block(
			Panic(Qual("fmt", "Sprintf").Call(Lit("kernels: %s: %d blocks with len(src) = %d, len(dst) = %d"), Id("name"), Id("blocks"), Len(Id("src")), Len(Id("dst")))),
		),
	)
	f.Line()
	f.Func().Id("checkDot").Params(Id("name").String(), Id("acc").Index().Int32(), Id("w").Index().Byte(), Id("x").Index().Int8(), List(Id("ldx"), Id("rows"), Id("groups")).Int()).Block(
		If(Id("rows").Op("<").Lit(0).Op("||").Id("groups").Op("<").Lit(0).Op("||").Id("ldx").Op("<").Id("groups").Op("*").Qual(qf, "KGroup").Op("||").
			Len(Id("acc")).Op("<").Id("rows").Op("*").Qual(qf, "TileN").Op("||").Len(Id("w")).Op("<").Id("groups").Op("*").Qual(qf, "GroupBytes").Op("||").
			Parens(Id("rows").Op(">").Lit(0).Op("&&").Len(Id("x")).Op("<").Parens(Id("rows").Op("-").Lit(1)).Op("*").Id("ldx").Op("+").Id("groups").Op("*").Qual(qf, "KGroup"))).Block(
			Panic(Qual("fmt", "Sprintf").Call(Lit("kernels: %s: bad dot arguments rows=%d groups=%d ldx=%d len(acc)=%d len(w)=%d len(x)=%d"),
				Id("name"), Id("rows"), Id("groups"), Id("ldx"), Len(Id("acc")), Len(Id("w")), Len(Id("x")))),
		),
	)
}

func checkFusedFunc(f *File) {
	f.Func().Id("checkFused").Params(Id("name").String(), Id("acc").Index().Int32(), Id("src").Index().Byte(), Id("x").Index().Int8(), List(Id("ldx"), Id("rows"), Id("blocks"), Id("b")).Int()).Block(
		If(Id("rows").Op("<").Lit(0).Op("||").Id("blocks").Op("<").Lit(0).Op("||").Id("ldx").Op("<").Id("blocks").Op("*").Qual(qf, "BlockK").Op("||").
			Len(Id("acc")).Op("<").Id("rows").Op("*").Qual(qf, "TileN").Op("||").Len(Id("src")).Op("<").Id("blocks").Op("*").Id("b").Op("*").Qual(qf, "GroupBytes").Op("||").
			Parens(Id("rows").Op(">").Lit(0).Op("&&").Len(Id("x")).Op("<").Parens(Id("rows").Op("-").Lit(1)).Op("*").Id("ldx").Op("+").Id("blocks").Op("*").Qual(qf, "BlockK"))).Block(
			Panic(Qual("fmt", "Sprintf").Call(Lit("kernels: %s: bad fused arguments rows=%d blocks=%d ldx=%d len(acc)=%d len(src)=%d len(x)=%d"),
				Id("name"), Id("rows"), Id("blocks"), Id("ldx"), Len(Id("acc")), Len(Id("src")), Len(Id("x")))),
		),
	)
	f.Line()
}

func checkQuantRowsFunc(f *File) {
	f.Func().Id("checkQuantRows").Params(Id("q").Index().Int8(), Id("x").Index().Float32(), List(Id("k"), Id("rows")).Int(), Id("scale").Index().Float32(), Id("sum").Index().Int32()).Block(
		If(Id("k").Op("<=").Lit(0).Op("||").Id("rows").Op("<").Lit(0).Op("||").Len(Id("q")).Op("<").Id("rows").Op("*").Qual(qf, "PaddedK").Call(Id("k")).Op("||").
			Len(Id("x")).Op("<").Id("rows").Op("*").Id("k").Op("||").Len(Id("scale")).Op("<").Id("rows").Op("||").Len(Id("sum")).Op("<").Id("rows")).Block(
			Panic(Qual("fmt", "Sprintf").Call(Lit("kernels: quantRows: bad arguments k=%d rows=%d len(q)=%d len(x)=%d"), Id("k"), Id("rows"), Len(Id("q")), Len(Id("x")))),
		),
	)
	f.Line()
}

func checkEpilogueFunc(f *File) {
	n := Qual(qf, "TileN")
	f.Func().Id("checkEpilogue").Params(Id("y").Index().Float32(), Id("ldy").Int(), Id("acc").Index().Int32(), Id("rows").Int(), Id("sum").Index().Int32(), Id("sx").Index().Float32(), Id("zs").Index().Int32(), List(Id("sw"), Id("bias")).Index().Float32()).Block(
		If(Id("rows").Op("<").Lit(0).Op("||").Id("ldy").Op("<").Add(n).Op("||").Len(Id("acc")).Op("<").Id("rows").Op("*").Add(Qual(qf, "TileN")).Op("||").
			Len(Id("sum")).Op("<").Id("rows").Op("||").Len(Id("sx")).Op("<").Id("rows").Op("||").Len(Id("zs")).Op("<").Add(Qual(qf, "TileN")).Op("||").
			Len(Id("sw")).Op("<").Add(Qual(qf, "TileN")).Op("||").Len(Id("bias")).Op("<").Add(Qual(qf, "TileN")).Op("||").
			Parens(Id("rows").Op(">").Lit(0).Op("&&").Len(Id("y")).Op("<").Parens(Id("rows").Op("-").Lit(1)).Op("*").Id("ldy").Op("+").Add(Qual(qf, "TileN")))).Block(
			Panic(Qual("fmt", "Sprintf").Call(Lit("kernels: epilogue: bad arguments rows=%d ldy=%d len(y)=%d len(acc)=%d"), Id("rows"), Id("ldy"), Len(Id("y")), Len(Id("acc")))),
		),
	)
}

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
			Id("checkUnpack").Call(Lit(name), Id("dst"), Id("src"), Id("blocks"), Lit(b)),
			For(Id("sb").Op(":=").Lit(0), Id("sb").Op("<").Id("blocks"), Id("sb").Op("++")).Block(
				Id("s").Op(":=").Parens(Op("*").Index(Lit(bb)).Byte()).Parens(Id("src").Index(Id("sb").Op("*").Lit(bb).Op(":"))),
				Id("d").Op(":=").Parens(Op("*").Index(Lit(qformat.BlockWeights)).Byte()).Parens(Id("dst").Index(Id("sb").Op("*").Lit(qformat.BlockWeights).Op(":"))),
				For(Id("c").Op(":=").Lit(0), Id("c").Op("<").Lit(qformat.GroupBytes), Id("c").Op("++")).Block(body...),
			),
		)
		f.Line()
	}

	// dotGo: the pure-Go dot micro-kernel.
	f.Comment("dotGo is the pure-Go dot micro-kernel (see DotFunc).")
	inner := []Code{
		Id("wg").Op(":=").Parens(Op("*").Index(q("GroupBytes")).Byte()).Parens(Id("w").Index(Id("g").Op("*").Qual(qf, "GroupBytes").Op(":"))),
		List(Id("x0"), Id("x1"), Id("x2"), Id("x3")).Op(":=").List(
			Int32().Parens(Id("xr").Index(Id("g").Op("*").Lit(4))), Int32().Parens(Id("xr").Index(Id("g").Op("*").Lit(4).Op("+").Lit(1))),
			Int32().Parens(Id("xr").Index(Id("g").Op("*").Lit(4).Op("+").Lit(2))), Int32().Parens(Id("xr").Index(Id("g").Op("*").Lit(4).Op("+").Lit(3)))),
		For(Id("j").Op(":=").Lit(0), Id("j").Op("<").Qual(qf, "TileN"), Id("j").Op("++")).Block(
			Id("a").Index(Id("j")).Op("+=").
				Int32().Parens(Id("wg").Index(Id("j").Op("*").Lit(4))).Op("*").Id("x0").Op("+").
				Int32().Parens(Id("wg").Index(Id("j").Op("*").Lit(4).Op("+").Lit(1))).Op("*").Id("x1").Op("+").
				Int32().Parens(Id("wg").Index(Id("j").Op("*").Lit(4).Op("+").Lit(2))).Op("*").Id("x2").Op("+").
				Int32().Parens(Id("wg").Index(Id("j").Op("*").Lit(4).Op("+").Lit(3))).Op("*").Id("x3"),
		),
	}
	f.Func().Id("dotGo").Params(Id("acc").Index().Int32(), Id("w").Index().Byte(), Id("x").Index().Int8(), List(Id("ldx"), Id("rows"), Id("groups")).Int()).Block(
		Id("checkDot").Call(Lit("dotGo"), Id("acc"), Id("w"), Id("x"), Id("ldx"), Id("rows"), Id("groups")),
		For(Id("r").Op(":=").Lit(0), Id("r").Op("<").Id("rows"), Id("r").Op("++")).Block(
			Id("a").Op(":=").Parens(Op("*").Index(q("TileN")).Int32()).Parens(Id("acc").Index(Id("r").Op("*").Qual(qf, "TileN").Op(":"))),
			Id("xr").Op(":=").Id("x").Index(Id("r").Op("*").Id("ldx").Op(":").Id("r").Op("*").Id("ldx").Op("+").Id("groups").Op("*").Qual(qf, "KGroup")),
			For(Id("g").Op(":=").Lit(0), Id("g").Op("<").Id("groups"), Id("g").Op("++")).Block(inner...),
		),
	)
	f.Line()
	f.Comment("quantRowGo is the pure-Go activation quantizer (see Tier.QuantRow).")
	f.Func().Id("quantRowGo").Params(Id("dst").Index().Int8(), Id("x").Index().Float32(), Id("inv").Float32()).Int32().Block(
		Id("dst").Op("=").Id("dst").Index(Op(":").Len(Id("x"))),
		Var().Id("sum").Int32(),
		For(List(Id("i"), Id("v")).Op(":=").Range().Id("x")).Block(
			Id("q").Op(":=").Qual(qf, "QuantizeAct").Call(Id("v"), Id("inv")),
			Id("dst").Index(Id("i")).Op("=").Id("q"),
			Id("sum").Op("+=").Int32().Parens(Id("q")),
		),
		Return(Id("sum")),
	)
	f.Line()
	f.Comment("quantRowsGo is the pure-Go whole-matrix activation quantizer (see Tier.QuantRows).")
	f.Func().Id("quantRowsGo").Params(Id("q").Index().Int8(), Id("x").Index().Float32(), List(Id("k"), Id("rows")).Int(), Id("scale").Index().Float32(), Id("sum").Index().Int32()).Block(
		Id("checkQuantRows").Call(Id("q"), Id("x"), Id("k"), Id("rows"), Id("scale"), Id("sum")),
		Id("kp").Op(":=").Qual(qf, "PaddedK").Call(Id("k")),
		For(Id("m").Op(":=").Lit(0), Id("m").Op("<").Id("rows"), Id("m").Op("++")).Block(
			List(Id("scale").Index(Id("m")), Id("sum").Index(Id("m"))).Op("=").Qual(qf, "QuantizeRow").Call(
				Id("q").Index(Id("m").Op("*").Id("kp").Op(":").Parens(Id("m").Op("+").Lit(1)).Op("*").Id("kp")),
				Id("x").Index(Id("m").Op("*").Id("k").Op(":").Parens(Id("m").Op("+").Lit(1)).Op("*").Id("k"))),
		),
	)
	f.Line()
	f.Comment("epilogueGo is the pure-Go epilogue (see Tier.Epilogue); the explicit float32")
	f.Comment("conversion forbids fusing the multiply and add, as the assembly does not fuse.")
	f.Func().Id("epilogueGo").Params(Id("y").Index().Float32(), Id("ldy").Int(), Id("acc").Index().Int32(), Id("rows").Int(), Id("sum").Index().Int32(), Id("sx").Index().Float32(), Id("zs").Index().Int32(), List(Id("sw"), Id("bias")).Index().Float32()).Block(
		Id("checkEpilogue").Call(Id("y"), Id("ldy"), Id("acc"), Id("rows"), Id("sum"), Id("sx"), Id("zs"), Id("sw"), Id("bias")),
		For(Id("r").Op(":=").Lit(0), Id("r").Op("<").Id("rows"), Id("r").Op("++")).Block(
			Id("yr").Op(":=").Id("y").Index(Id("r").Op("*").Id("ldy").Op(":").Id("r").Op("*").Id("ldy").Op("+").Qual(qf, "TileN")),
			For(Id("j").Op(":=").Range().Id("yr")).Block(
				Id("a").Op(":=").Float32().Parens(Id("acc").Index(Id("r").Op("*").Qual(qf, "TileN").Op("+").Id("j")).Op("-").Id("zs").Index(Id("j")).Op("*").Id("sum").Index(Id("r"))),
				Id("yr").Index(Id("j")).Op("=").Float32().Parens(Id("a").Op("*").Parens(Id("sx").Index(Id("r")).Op("*").Id("sw").Index(Id("j")))).Op("+").Id("bias").Index(Id("j")),
			),
		),
	)
	f.Line()
	f.Comment("fusedGo is the pure-Go fused kernel (see FusedFunc): it unpacks one")
	f.Comment("superblock at a time with unpack and accumulates it with dotGo.")
	f.Func().Id("fusedGo").Params(Id("unpack").Id("UnpackFunc"), Id("b").Int(), Id("acc").Index().Int32(), Id("src").Index().Byte(), Id("x").Index().Int8(), List(Id("ldx"), Id("rows"), Id("blocks")).Int()).Block(
		Id("checkFused").Call(Lit("fusedGo"), Id("acc"), Id("src"), Id("x"), Id("ldx"), Id("rows"), Id("blocks"), Id("b")),
		Var().Id("buf").Index(q("BlockWeights")).Byte(),
		For(Id("sb").Op(":=").Lit(0), Id("sb").Op("<").Id("blocks"), Id("sb").Op("++")).Block(
			Id("unpack").Call(Id("buf").Index(Op(":")), Id("src").Index(Id("sb").Op("*").Id("b").Op("*").Qual(qf, "GroupBytes").Op(":")), Lit(1)),
			Id("dotGo").Call(Id("acc"), Id("buf").Index(Op(":")), Id("x").Index(Id("sb").Op("*").Qual(qf, "BlockK").Op(":")), Id("ldx"), Id("rows"), q("GroupsPerBlock")),
		),
	)
	f.Line()
	unp := Dict{}
	dots := Dict{}
	fused := Dict{}
	for b := qformat.MinBits; b <= qformat.MaxBits; b++ {
		unp[Lit(b)] = Id(fmt.Sprintf("unpackB%dGo", b))
		dots[Lit(b)] = Id("dotGo")
		name := fmt.Sprintf("fusedB%dGo", b)
		f.Commentf("%s is the pure-Go fused kernel of %d-bit tiles.", name, b)
		f.Func().Id(name).Params(Id("acc").Index().Int32(), Id("src").Index().Byte(), Id("x").Index().Int8(), List(Id("ldx"), Id("rows"), Id("blocks")).Int()).Block(
			Id("fusedGo").Call(Id(fmt.Sprintf("unpackB%dGo", b)), Lit(b), Id("acc"), Id("src"), Id("x"), Id("ldx"), Id("rows"), Id("blocks")),
		)
		f.Line()
		fused[Lit(b)] = Id(name)
	}
	f.Comment("PureGo is the portable tier: readable Go, any architecture.")
	f.Var().Id("PureGo").Op("=").Id("Tier").Values(Dict{
		Id("Name"):      Lit("purego"),
		Id("Rows"):      Lit(1),
		Id("Unpack"):    Index(q("MaxBits").Op("+").Lit(1)).Id("UnpackFunc").Values(unp),
		Id("Dot"):       Index(q("MaxBits").Op("+").Lit(1)).Id("DotFunc").Values(dots),
		Id("Fused"):     Index(q("MaxBits").Op("+").Lit(1)).Id("FusedFunc").Values(fused),
		Id("MaxAbs"):    q("MaxAbs"),
		Id("QuantRow"):  Id("quantRowGo"),
		Id("QuantRows"): Id("quantRowsGo"),
		Id("Epilogue"):  Id("epilogueGo"),
	})
}

// wrappersFile emits the length-checking Go wrappers around the assembly and
// the AVX2 and VNNI tiers (amd64, !purego).
func wrappersFile(f *File) {
	wrapUnpack := func(isa string, b int) string {
		name := fmt.Sprintf("unpackB%d%s", b, isa)
		f.Commentf("%s checks lengths and calls %sAsm.", name, name)
		f.Func().Id(name).Params(List(Id("dst"), Id("src")).Index().Byte(), Id("blocks").Int()).Block(
			Id("checkUnpack").Call(Lit(name), Id("dst"), Id("src"), Id("blocks"), Lit(b)),
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
			Id("checkDot").Call(Lit(name), Id("acc"), Id("w"), Id("x"), Id("ldx"), Id("rows"), Id("groups")),
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
			Id("checkFused").Call(Lit(name), Id("acc"), Id("src"), Id("x"), Id("ldx"), Id("rows"), Id("blocks"), Lit(b)),
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
			Id("checkDot").Call(Lit(name), Id("acc"), Id("w"), Id("x"), Id("ldx"), Id("rows"), Id("groups")),
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
		Id("sum").Op(":=").Id("quantRowGo").Call(Id("dst").Index(Id("n").Op(":")), Id("x").Index(Id("n").Op(":")), Id("inv")),
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
		Id("checkQuantRows").Call(Id("q"), Id("x"), Id("k"), Id("rows"), Id("scale"), Id("sum")),
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
	f.Comment("epilogueAVX2 checks lengths and calls epilogueAVX2Asm.")
	f.Func().Id("epilogueAVX2").Params(Id("y").Index().Float32(), Id("ldy").Int(), Id("acc").Index().Int32(), Id("rows").Int(), Id("sum").Index().Int32(), Id("sx").Index().Float32(), Id("zs").Index().Int32(), List(Id("sw"), Id("bias")).Index().Float32()).Block(
		Id("checkEpilogue").Call(Id("y"), Id("ldy"), Id("acc"), Id("rows"), Id("sum"), Id("sx"), Id("zs"), Id("sw"), Id("bias")),
		If(Id("rows").Op(">").Lit(0)).Block(
			Id("epilogueAVX2Asm").Call(Op("&").Id("y").Index(Lit(0)), Id("ldy"), Op("&").Id("acc").Index(Lit(0)), Id("rows"), Op("&").Id("sum").Index(Lit(0)), Op("&").Id("sx").Index(Lit(0)), Op("&").Id("zs").Index(Lit(0)), Op("&").Id("sw").Index(Lit(0)), Op("&").Id("bias").Index(Lit(0))),
		),
	)
	f.Line()
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
			Id("Unpack"):    Index(q("MaxBits").Op("+").Lit(1)).Id("UnpackFunc").Values(unp),
			Id("MaxAbs"):    Id("maxAbsAVX2"),
			Id("QuantRow"):  Id("quantRowAVX2"),
			Id("QuantRows"): Id("quantRowsAVX2"),
			Id("Epilogue"):  Id("epilogueAVX2"),
			Id("Peak"):      Id("peak" + isa + "Asm"),
		}
		if isa == "AVX2" {
			fused := Dict{}
			for b := qformat.MinBits; b <= FusedMaxBits; b++ {
				fused[Lit(b)] = Id(wrapFused(b))
			}
			d[Id("Fused")] = Index(q("MaxBits").Op("+").Lit(1)).Id("FusedFunc").Values(fused)
			d[Id("Name")] = Lit("avx2")
			d[Id("Requires")] = Index().String().Values(Lit("avx2"))
			d[Id("Rows")] = Lit(AVX2Rows)
			d[Id("WeightOffset")] = Index(q("MaxBits").Op("+").Lit(1)).Int32().Values(Dict{Lit(8): Lit(128)})
			d[Id("PeakMACs")] = Lit(PeakMACs("avx2"))
			f.Comment("AVX2 is the VPMADDUBSW+VPMADDWD tier (8-bit tiles are unpacked as q−128).")
		} else {
			d[Id("Name")] = Lit("vnni")
			d[Id("Requires")] = Index().String().Values(Lit("avx2"), Lit("avx512f"), Lit("avx512bw"), Lit("avx512vnni"))
			d[Id("Rows")] = Lit(VNNIRows)
			d[Id("PeakMACs")] = Lit(PeakMACs("vnni"))
			f.Comment("VNNI is the AVX-512 VNNI (VPDPBUSD) tier.")
		}
		d[Id("Dot")] = Index(q("MaxBits").Op("+").Lit(1)).Id("DotFunc").Values(dots)
		f.Var().Id(isa).Op("=").Id("Tier").Values(d)
		f.Line()
	}
}

func dispatchFile(f *File, tiers ...string) {
	f.Comment("Tiers lists the tiers compiled into this build, best first. A tier is")
	f.Comment("usable when the CPU has every feature in its Requires.")
	var vals []Code
	for _, t := range tiers {
		vals = append(vals, Op("&").Id(t))
	}
	f.Var().Id("Tiers").Op("=").Index().Op("*").Id("Tier").Values(vals...)
}

func docFile(f *File) {
	f.Comment("//go:generate go run ../../gen/cmd/genkernels")
}

// QuantRows8MaxK bounds the row length that the AVX2 tier quantizes with the
// whole-matrix quantRows8 kernel (eight values per step, one max chain);
// longer rows use the 32-wide row kernels, whose per-row overhead they
// amortize.
const QuantRows8MaxK = 256

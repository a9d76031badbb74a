package kernels

import (
	"fmt"
	"math"

	"github.com/mmcloughlin/avo/attr"
	"github.com/mmcloughlin/avo/build"
	"github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"

	"github.com/flbq/flbq/gen/genfiles"
	"github.com/flbq/flbq/runtime/qformat"
)

// Register blocking of the dot micro-kernels (rows of x per inner loop).
const (
	AVX2Rows = 4
	VNNIRows = 16
	// Independent accumulator chains of the register-only peak loops and the
	// multiply-accumulates each iteration performs.
	avx2PeakChains = 8
	vnniPeakChains = 12
)

// PeakMACs returns the multiply-accumulates per iteration of the peak loop
// of a tier ("avx2" or "vnni").
func PeakMACs(tier string) int {
	switch tier {
	case "avx2":
		return avx2PeakChains * 32
	case "vnni":
		return vnniPeakChains * 64
	}
	return 0
}

// asmFile renders one avo context into assembly and stub sources.
func asmFile(pkg string, fill func(c *build.Context)) (asm, stubs []byte, err error) {
	return genfiles.Asm(GeneratorName, pkg, "!purego", fill)
}

func mem(base reg.Register, disp int) operand.Mem { return operand.Mem{Base: base, Disp: disp} }

func memIdx(base, idx reg.Register, scale uint8) operand.Mem {
	return operand.Mem{Base: base, Index: idx, Scale: scale}
}

// bcastConst32 broadcasts a 32-bit constant into a vector register.
func bcastConst32(c *build.Context, v uint32, zmm bool) reg.VecVirtual {
	t := c.GP32()
	c.MOVL(operand.U32(v), t)
	if zmm {
		z := c.ZMM()
		c.VPBROADCASTD(t, z)
		return z
	}
	x := c.XMM()
	c.VMOVD(t, x)
	y := c.YMM()
	c.VPBROADCASTD(x, y)
	return y
}

func rep8(b uint8) uint32 { return uint32(b) * 0x01010101 }

// unpackKernel emits unpackB<b><ISA>Asm(dst, src *byte, blocks int): it unpacks
// blocks (≥ 1) superblocks of a b-bit tile into the byte layout of qformat
// (group g at g·64). With offset128 (AVX2, b = 8) it writes q−128 as int8.
func unpackKernel(c *build.Context, name string, b int, zmm bool, offset128 bool) {
	c.Function(name)
	c.Attributes(attr.NOSPLIT)
	c.Pragma("noescape")
	c.SignatureExpr("func(dst, src *byte, blocks int)")
	c.Doc(fmt.Sprintf("%s unpacks blocks ≥ 1 superblocks of a %d-bit tile (planes %v).", name, b, qformat.Planes(b)))
	dst := c.Load(c.Param("dst"), c.GP64())
	src := c.Load(c.Param("src"), c.GP64())
	n := c.Load(c.Param("blocks"), c.GP64())

	planes, shifts, offs := qformat.Planes(b), qformat.PlaneShifts(b), qformat.PlaneOffsets(b)
	vw := 32 // bytes per vector
	if zmm {
		vw = 64
	}
	halves := qformat.GroupBytes / vw
	masks := map[uint8]reg.VecVirtual{}
	maskOf := func(m uint8) reg.VecVirtual {
		if r, ok := masks[m]; ok {
			return r
		}
		r := bcastConst32(c, rep8(m), zmm)
		masks[m] = r
		return r
	}
	var flip reg.VecVirtual
	if offset128 {
		flip = bcastConst32(c, rep8(0x80), zmm)
	} else if b < 8 {
		for pi, p := range planes {
			maskOf(uint8((1<<p - 1) << shifts[pi]))
		}
	}
	vec := func() reg.VecVirtual {
		if zmm {
			return c.ZMM()
		}
		return c.YMM()
	}
	load := func(m operand.Mem, r reg.VecVirtual) {
		if zmm {
			c.VMOVDQU64(m, r)
		} else {
			c.VMOVDQU(m, r)
		}
	}
	store := func(r reg.VecVirtual, m operand.Mem) {
		if zmm {
			c.VMOVDQU64(r, m)
		} else {
			c.VMOVDQU(r, m)
		}
	}
	and := func(a, b, d reg.VecVirtual) {
		if zmm {
			c.VPANDD(a, b, d)
		} else {
			c.VPAND(a, b, d)
		}
	}
	or := func(a, b, d reg.VecVirtual) {
		if zmm {
			c.VPORD(a, b, d)
		} else {
			c.VPOR(a, b, d)
		}
	}

	c.Label(name + "_loop")
	for g := 0; g < qformat.GroupsPerBlock; g++ {
		for h := 0; h < halves; h++ {
			var res reg.VecVirtual
			for pi, p := range planes {
				per := 8 / p
				blk := offs[pi] + g/per*qformat.GroupBytes + h*vw
				t := g % per
				r := t*p - shifts[pi]
				v := vec()
				load(mem(src, blk), v)
				if b == 8 {
					if offset128 {
						c.VPXOR(flip, v, v)
					}
					res = v
					continue
				}
				switch {
				case r > 0:
					c.VPSRLW(operand.U8(r), v, v)
				case r < 0:
					c.VPSLLW(operand.U8(-r), v, v)
				}
				and(maskOf(uint8((1<<p-1)<<shifts[pi])), v, v)
				if res == nil {
					res = v
				} else {
					or(v, res, res)
				}
			}
			store(res, mem(dst, g*qformat.GroupBytes+h*vw))
		}
	}
	c.ADDQ(operand.U32(qformat.BlockBytes(b)), src)
	c.ADDQ(operand.U32(qformat.BlockWeights), dst)
	c.DECQ(n)
	c.JNZ(operand.LabelRef(name + "_loop"))
	c.VZEROUPPER()
	c.RET()
}

// dotAVX2 emits the AVX2 dot micro-kernel:
//
//	acc[r·16+j] += Σ_{g<groups} Σ_{i<4} w[g·64+j·4+i] · x[r·ldx+g·4+i]
//
// for r < rows, j < 16, with rows ≥ 1, groups ≥ 1, x ∈ [−127, 127].
//
// Unsigned form (b ≤ 7): w ∈ [0, 127] is the unsigned operand of
// VPMADDUBSW, x the signed one, so each int16 pair sum is at most
// 2·127·128 = 32512 < 32767 in magnitude: no saturation (even at x = −128).
//
// Signed form (b = 8, unpacked as w' = q−128 ∈ [−128, 127]): VPMADDUBSW gets
// |w'| ≤ 128 as the unsigned operand and sign(w')·x ∈ [−127, 127] (VPSIGNB;
// x ≠ −128 so the negation cannot wrap) as the signed one, so each pair sum
// is at most 2·128·127 = 32512 < 32767 in magnitude: no saturation. The
// kernel then computes Σ(q−128)·x; the caller adds 128·Σx through the zero
// point (Tier.WeightOffset).
//
// VPMADDWD against ones widens the pair sums to int32 exactly.
func dotAVX2(c *build.Context, name string, signed bool) {
	c.Function(name)
	c.Attributes(attr.NOSPLIT)
	c.Pragma("noescape")
	c.SignatureExpr("func(acc *int32, w *byte, x *int8, ldx, rows, groups int)")
	form := "unsigned weights (b ≤ 7)"
	if signed {
		form = "signed weights q−128 (b = 8)"
	}
	c.Doc(fmt.Sprintf("%s is the AVX2 dot micro-kernel for %s, %d rows per block.", name, form, AVX2Rows))
	acc := c.Load(c.Param("acc"), c.GP64())
	w0 := c.Load(c.Param("w"), c.GP64())
	xp := c.Load(c.Param("x"), c.GP64())
	ldx := c.Load(c.Param("ldx"), c.GP64())
	rows := c.Load(c.Param("rows"), c.GP64())
	groups := c.Load(c.Param("groups"), c.GP64())
	ldx3 := c.GP64()
	c.LEAQ(memIdx(ldx, ldx, 2), ldx3)
	ones := bcastConst32(c, 0x00010001, false)

	block := func(nr int, label string) {
		var a [AVX2Rows][2]reg.VecVirtual
		for r := 0; r < nr; r++ {
			for h := 0; h < 2; h++ {
				a[r][h] = c.YMM()
				c.VMOVDQU(mem(acc, (r*qformat.TileN+h*8)*4), a[r][h])
			}
		}
		wp, x0, cnt := c.GP64(), c.GP64(), c.GP64()
		c.MOVQ(w0, wp)
		c.MOVQ(xp, x0)
		c.MOVQ(groups, cnt)
		c.Label(label)
		var wv, av [2]reg.VecVirtual
		for h := 0; h < 2; h++ {
			wv[h] = c.YMM()
			c.VMOVDQU(mem(wp, h*32), wv[h])
			if signed {
				av[h] = c.YMM()
				c.VPABSB(wv[h], av[h])
			}
		}
		for r := 0; r < nr; r++ {
			var xm operand.Mem
			switch r {
			case 0:
				xm = mem(x0, 0)
			case 1:
				xm = memIdx(x0, ldx, 1)
			case 2:
				xm = memIdx(x0, ldx, 2)
			case 3:
				xm = memIdx(x0, ldx3, 1)
			}
			bx := c.YMM()
			c.VPBROADCASTD(xm, bx)
			for h := 0; h < 2; h++ {
				t := c.YMM()
				if signed {
					c.VPSIGNB(wv[h], bx, t)
					c.VPMADDUBSW(t, av[h], t)
				} else {
					c.VPMADDUBSW(bx, wv[h], t)
				}
				c.VPMADDWD(ones, t, t)
				c.VPADDD(t, a[r][h], a[r][h])
			}
		}
		c.ADDQ(operand.U32(qformat.GroupBytes), wp)
		c.ADDQ(operand.U32(qformat.KGroup), x0)
		c.DECQ(cnt)
		c.JNZ(operand.LabelRef(label))
		for r := 0; r < nr; r++ {
			for h := 0; h < 2; h++ {
				c.VMOVDQU(a[r][h], mem(acc, (r*qformat.TileN+h*8)*4))
			}
		}
	}

	c.Label(name + "_rows4")
	c.CMPQ(rows, operand.U32(AVX2Rows))
	c.JL(operand.LabelRef(name + "_rows1"))
	block(AVX2Rows, name+"_k4")
	c.ADDQ(operand.U32(AVX2Rows*qformat.TileN*4), acc)
	c.LEAQ(memIdx(xp, ldx, 4), xp)
	c.SUBQ(operand.U32(AVX2Rows), rows)
	c.JMP(operand.LabelRef(name + "_rows4"))

	c.Label(name + "_rows1")
	c.TESTQ(rows, rows)
	c.JZ(operand.LabelRef(name + "_done"))
	block(1, name+"_k1")
	c.ADDQ(operand.U32(qformat.TileN*4), acc)
	c.ADDQ(ldx, xp)
	c.DECQ(rows)
	c.JMP(operand.LabelRef(name + "_rows1"))

	c.Label(name + "_done")
	c.VZEROUPPER()
	c.RET()
}

// dotVNNI emits the AVX-512 VNNI dot micro-kernel (same contract as
// dotAVX2, unsigned weights for every b ≤ 8): VPDPBUSD multiplies the
// unsigned weight bytes (≤ 255) by the broadcast signed activation bytes and
// adds the four products straight into int32 lanes, with no intermediate
// saturation.
func dotVNNI(c *build.Context, name string) {
	c.Function(name)
	c.Attributes(attr.NOSPLIT)
	c.Pragma("noescape")
	c.SignatureExpr("func(acc *int32, w *byte, x *int8, ldx, rows, groups int)")
	c.Doc(fmt.Sprintf("%s is the AVX-512 VNNI dot micro-kernel, %d rows per block.", name, VNNIRows))
	acc := c.Load(c.Param("acc"), c.GP64())
	w0 := c.Load(c.Param("w"), c.GP64())
	xp := c.Load(c.Param("x"), c.GP64())
	ldx := c.Load(c.Param("ldx"), c.GP64())
	rows := c.Load(c.Param("rows"), c.GP64())
	groups := c.Load(c.Param("groups"), c.GP64())
	ldx3 := c.GP64()
	c.LEAQ(memIdx(ldx, ldx, 2), ldx3)

	// Each block keeps nr accumulator chains in flight: VPDPBUSD has a
	// latency of about 5 cycles at 1–2 per cycle, so 16 rows are needed to
	// keep the unit busy (8 left it ~35 % idle); 8, 4 and 1 finish the tail.
	block := func(nr int, label string) {
		a := make([]reg.VecVirtual, nr)
		for r := range a {
			a[r] = c.ZMM()
			c.VMOVDQU64(mem(acc, r*qformat.TileN*4), a[r])
		}
		wp, cnt := c.GP64(), c.GP64()
		bases := make([]reg.GPVirtual, (nr+3)/4) // x rows 4i..4i+3
		for i := range bases {
			bases[i] = c.GP64()
			if i == 0 {
				c.MOVQ(xp, bases[i])
			} else {
				c.LEAQ(memIdx(bases[i-1], ldx, 4), bases[i])
			}
		}
		c.MOVQ(w0, wp)
		// The loop does two k-groups per iteration (halving the pointer
		// updates); an odd last group runs once more below.
		step := func(g int) {
			wv := c.ZMM()
			c.VMOVDQU64(mem(wp, g*qformat.GroupBytes), wv)
			for r := 0; r < nr; r++ {
				xm := operand.Mem{Base: bases[r/4], Disp: g * qformat.KGroup}
				switch r % 4 {
				case 1:
					xm.Index, xm.Scale = ldx, 1
				case 2:
					xm.Index, xm.Scale = ldx, 2
				case 3:
					xm.Index, xm.Scale = ldx3, 1
				}
				c.VPDPBUSD_BCST(xm, wv, a[r])
			}
		}
		c.MOVQ(groups, cnt)
		c.SHRQ(operand.U8(1), cnt)
		c.JZ(operand.LabelRef(label + "_odd"))
		c.Label(label)
		step(0)
		step(1)
		c.ADDQ(operand.U32(2*qformat.GroupBytes), wp)
		for _, b := range bases {
			c.ADDQ(operand.U32(2*qformat.KGroup), b)
		}
		c.DECQ(cnt)
		c.JNZ(operand.LabelRef(label))
		c.Label(label + "_odd")
		c.TESTQ(operand.U32(1), groups)
		c.JZ(operand.LabelRef(label + "_store"))
		step(0)
		c.Label(label + "_store")
		for r := range a {
			c.VMOVDQU64(a[r], mem(acc, r*qformat.TileN*4))
		}
	}

	// Blocks of VNNIRows rows while they last, then one block each of 8
	// and 4 rows where they fit, then single rows.
	c.Label(name + "_rows16")
	c.CMPQ(rows, operand.U32(VNNIRows))
	c.JL(operand.LabelRef(name + "_rows8"))
	block(VNNIRows, name+"_k16")
	c.ADDQ(operand.U32(VNNIRows*qformat.TileN*4), acc)
	step := c.GP64() // xp += VNNIRows·ldx
	c.MOVQ(ldx, step)
	c.SHLQ(operand.U8(4), step)
	c.ADDQ(step, xp)
	c.SUBQ(operand.U32(VNNIRows), rows)
	c.JMP(operand.LabelRef(name + "_rows16"))

	for _, nr := range []int{8, 4} {
		c.Label(fmt.Sprintf("%s_rows%d", name, nr))
		c.CMPQ(rows, operand.U32(nr))
		next := fmt.Sprintf("%s_rows%d", name, nr/2)
		if nr == 4 {
			next = name + "_rows1"
		}
		c.JL(operand.LabelRef(next))
		block(nr, fmt.Sprintf("%s_k%d", name, nr))
		c.ADDQ(operand.U32(nr*qformat.TileN*4), acc)
		if nr == 8 {
			c.LEAQ(memIdx(xp, ldx, 8), xp)
		} else {
			c.LEAQ(memIdx(xp, ldx, 4), xp)
		}
		c.SUBQ(operand.U32(nr), rows)
	}

	c.Label(name + "_rows1")
	c.TESTQ(rows, rows)
	c.JZ(operand.LabelRef(name + "_done"))
	block(1, name+"_k1")
	c.ADDQ(operand.U32(qformat.TileN*4), acc)
	c.ADDQ(ldx, xp)
	c.DECQ(rows)
	c.JMP(operand.LabelRef(name + "_rows1"))

	c.Label(name + "_done")
	c.VZEROUPPER()
	c.RET()
}

// maxAbsAVX2 emits maxAbsAVX2Asm(x *float32, n int) float32 for n a positive
// multiple of 32.
func maxAbsAVX2(c *build.Context) {
	name := "maxAbsAVX2Asm"
	c.Function(name)
	c.Attributes(attr.NOSPLIT)
	c.Pragma("noescape")
	c.SignatureExpr("func(x *float32, n int) float32")
	c.Doc(name + " returns max |x[i]| over n > 0 values, n a multiple of 32.")
	x := c.Load(c.Param("x"), c.GP64())
	n := c.Load(c.Param("n"), c.GP64())
	mask := bcastConst32(c, 0x7fffffff, false)
	var m [4]reg.VecVirtual
	for i := range m {
		m[i] = c.YMM()
		c.VXORPS(m[i], m[i], m[i])
	}
	c.Label(name + "_loop")
	for i := range m {
		t := c.YMM()
		c.VANDPS(mem(x, 32*i), mask, t)
		c.VMAXPS(t, m[i], m[i])
	}
	c.ADDQ(operand.U32(128), x)
	c.SUBQ(operand.U32(32), n)
	c.JNZ(operand.LabelRef(name + "_loop"))
	c.VMAXPS(m[1], m[0], m[0])
	c.VMAXPS(m[3], m[2], m[2])
	c.VMAXPS(m[2], m[0], m[0])
	hi := c.XMM()
	c.VEXTRACTF128(operand.U8(1), m[0], hi)
	lo := m[0].AsX()
	c.VMAXPS(hi, lo, lo)
	c.VPSHUFD(operand.U8(0x4e), lo, hi)
	c.VMAXPS(hi, lo, lo)
	c.VPSHUFD(operand.U8(0xb1), lo, hi)
	c.VMAXPS(hi, lo, lo)
	c.VZEROUPPER()
	c.Store(lo, c.ReturnIndex(0))
	c.RET()
}

// quantRowAVX2 emits quantRowAVX2Asm(dst *int8, x *float32, n int, inv float32) int32:
// dst[i] = clamp(RoundToEven(x[i]·inv), −127, 127) for n a positive multiple
// of 32 (VCVTPS2DQ rounds to nearest even under Go's default MXCSR), and
// returns Σ dst[i].
func quantRowAVX2(c *build.Context) {
	name := "quantRowAVX2Asm"
	c.Function(name)
	c.Attributes(attr.NOSPLIT)
	c.Pragma("noescape")
	c.SignatureExpr("func(dst *int8, x *float32, n int, inv float32) int32")
	c.Doc(name + " quantizes n > 0 values (a multiple of 32) and returns their sum.")
	// VPERMD indices that undo the lane interleaving of VPACKSSDW+VPACKSSWB.
	perm := c.StaticGlobal("quantRowPerm")
	c.DataAttributes(attr.RODATA | attr.NOPTR)
	for _, v := range []uint32{0, 4, 1, 5, 2, 6, 3, 7} {
		c.AppendDatum(operand.U32(v))
	}
	dst := c.Load(c.Param("dst"), c.GP64())
	x := c.Load(c.Param("x"), c.GP64())
	n := c.Load(c.Param("n"), c.GP64())
	invp, err := c.Param("inv").Resolve()
	if err != nil {
		panic(err)
	}
	inv := c.YMM()
	c.VBROADCASTSS(invp.Addr, inv)
	hi := bcastConst32(c, ActMaxU32, false)
	lo := bcastConst32(c, ^ActMaxU32+1, false)
	pidx := c.YMM()
	c.VMOVDQU(perm, pidx)
	sum := c.YMM()
	c.VPXOR(sum, sum, sum)
	c.Label(name + "_loop")
	var v [4]reg.VecVirtual
	for i := range v {
		v[i] = c.YMM()
		c.VMULPS(mem(x, 32*i), inv, v[i])
		c.VCVTPS2DQ(v[i], v[i])
		c.VPMINSD(hi, v[i], v[i])
		c.VPMAXSD(lo, v[i], v[i])
		c.VPADDD(v[i], sum, sum)
	}
	c.VPACKSSDW(v[1], v[0], v[0])
	c.VPACKSSDW(v[3], v[2], v[2])
	c.VPACKSSWB(v[2], v[0], v[0])
	c.VPERMD(v[0], pidx, v[0])
	c.VMOVDQU(v[0], mem(dst, 0))
	c.ADDQ(operand.U32(128), x)
	c.ADDQ(operand.U32(32), dst)
	c.SUBQ(operand.U32(32), n)
	c.JNZ(operand.LabelRef(name + "_loop"))
	h := c.XMM()
	c.VEXTRACTI128(operand.U8(1), sum, h)
	s := sum.AsX()
	c.VPADDD(h, s, s)
	c.VPSHUFD(operand.U8(0x4e), s, h)
	c.VPADDD(h, s, s)
	c.VPSHUFD(operand.U8(0xb1), s, h)
	c.VPADDD(h, s, s)
	r := c.GP32()
	c.VMOVD(s, r)
	c.VZEROUPPER()
	c.Store(r, c.ReturnIndex(0))
	c.RET()
}

// ActMaxU32 is qformat.ActMax as the generator's constant type.
const ActMaxU32 = uint32(qformat.ActMax)

// peakAVX2 emits a register-only loop of VPMADDUBSW+VPMADDWD+VPADDD on
// independent chains: the machine's AVX2 int8 multiply-accumulate peak.
func peakAVX2(c *build.Context) {
	name := "peakAVX2Asm"
	c.Function(name)
	c.Attributes(attr.NOSPLIT)
	c.SignatureExpr("func(iters int)")
	c.Doc(fmt.Sprintf("%s runs iters iterations of %d VPMADDUBSW+VPMADDWD+VPADDD chains (%d MACs each).", name, avx2PeakChains, avx2PeakChains*32))
	n := c.Load(c.Param("iters"), c.GP64())
	ones := bcastConst32(c, 0x00010001, false)
	wv := bcastConst32(c, 0x01020304, false)
	xv := bcastConst32(c, 0x05060708, false)
	acc := make([]reg.VecVirtual, avx2PeakChains/2)
	for i := range acc {
		acc[i] = c.YMM()
		c.VPXOR(acc[i], acc[i], acc[i])
	}
	c.Label(name + "_loop")
	for i := 0; i < avx2PeakChains; i++ {
		t := c.YMM()
		c.VPMADDUBSW(xv, wv, t)
		c.VPMADDWD(ones, t, t)
		c.VPADDD(t, acc[i%len(acc)], acc[i%len(acc)])
	}
	c.DECQ(n)
	c.JNZ(operand.LabelRef(name + "_loop"))
	c.VZEROUPPER()
	c.RET()
}

// peakVNNI emits a register-only VPDPBUSD loop on independent accumulators.
func peakVNNI(c *build.Context) {
	name := "peakVNNIAsm"
	c.Function(name)
	c.Attributes(attr.NOSPLIT)
	c.SignatureExpr("func(iters int)")
	c.Doc(fmt.Sprintf("%s runs iters iterations of %d independent VPDPBUSD (%d MACs each).", name, vnniPeakChains, vnniPeakChains*64))
	n := c.Load(c.Param("iters"), c.GP64())
	wv := bcastConst32(c, 0x01020304, true)
	xv := bcastConst32(c, 0x05060708, true)
	acc := make([]reg.VecVirtual, vnniPeakChains)
	for i := range acc {
		acc[i] = c.ZMM()
		c.VPXORD(acc[i], acc[i], acc[i])
	}
	c.Label(name + "_loop")
	for i := range acc {
		c.VPDPBUSD(xv, wv, acc[i])
	}
	c.DECQ(n)
	c.JNZ(operand.LabelRef(name + "_loop"))
	c.VZEROUPPER()
	c.RET()
}

// avx2Asm builds the AVX2 tier's assembly file.
func avx2Asm(c *build.Context) {
	for b := qformat.MinBits; b <= qformat.MaxBits; b++ {
		unpackKernel(c, fmt.Sprintf("unpackB%dAVX2Asm", b), b, false, b == 8)
	}
	dotAVX2(c, "dotAVX2Asm", false)
	dotAVX2(c, "dotSignedAVX2Asm", true)
	for b := qformat.MinBits; b <= FusedMaxBits; b++ {
		fusedAVX2(c, fmt.Sprintf("fusedB%dAVX2Asm", b), b)
	}
	for _, fl := range Dot16Flushes {
		dot16AVX2(c, fmt.Sprintf("dot16F%dAVX2Asm", fl), fl)
	}
	maxAbsAVX2(c)
	quantRowAVX2(c)
	quantRows8AVX2(c)
	epilogueAVX2(c)
	peakAVX2(c)
}

// vnniAsm builds the AVX-512 VNNI tier's assembly file.
func vnniAsm(c *build.Context) {
	for b := qformat.MinBits; b <= qformat.MaxBits; b++ {
		unpackKernel(c, fmt.Sprintf("unpackB%dVNNIAsm", b), b, true, false)
	}
	dotVNNI(c, "dotVNNIAsm")
	epilogueVNNI(c)
	peakVNNI(c)
}

// epilogueVNNI is the epilogue with the tile's 16 channels in one ZMM
// register: half the instructions of the AVX2 form, which took ~11 % of a
// b = 8 VNNI product (BenchmarkQLinear, pprof).
func epilogueVNNI(c *build.Context) { epilogue(c, "epilogueVNNIAsm", true) }

// epilogueAVX2 emits the fp32 epilogue of one full tile of 16 channels:
//
//	y[r·ldy+j] = float32(acc[r·16+j] − zs[j]·sum[r]) · (sx[r]·sw[j]) + bias[j]
//
// for r < rows (≥ 1), with the products and the sum rounded separately (no
// FMA), exactly as the Go twin computes them.
func epilogueAVX2(c *build.Context) { epilogue(c, "epilogueAVX2Asm", false) }

// epilogue emits either form: two YMM halves per row, or one ZMM.
func epilogue(c *build.Context, name string, zmm bool) {
	halves, vec := 2, c.YMM
	movInt := func(src, dst operand.Op) { c.VMOVDQU(src, dst) }
	if zmm {
		halves, vec = 1, c.ZMM
		movInt = func(src, dst operand.Op) { c.VMOVDQU32(src, dst) }
	}
	width := 64 / halves // bytes per half
	c.Function(name)
	c.Attributes(attr.NOSPLIT)
	c.Pragma("noescape")
	c.SignatureExpr("func(y *float32, ldy int, acc *int32, rows int, sum *int32, sx *float32, zs *int32, sw *float32, bias *float32)")
	c.Doc(name + " writes rows ≥ 1 rows of one full 16-channel tile of fp32 outputs.")
	y := c.Load(c.Param("y"), c.GP64())
	ldy := c.Load(c.Param("ldy"), c.GP64())
	acc := c.Load(c.Param("acc"), c.GP64())
	rows := c.Load(c.Param("rows"), c.GP64())
	sum := c.Load(c.Param("sum"), c.GP64())
	sx := c.Load(c.Param("sx"), c.GP64())
	zsp := c.Load(c.Param("zs"), c.GP64())
	swp := c.Load(c.Param("sw"), c.GP64())
	bp := c.Load(c.Param("bias"), c.GP64())
	zs, sw, bias := make([]reg.VecVirtual, halves), make([]reg.VecVirtual, halves), make([]reg.VecVirtual, halves)
	for h := range halves {
		zs[h], sw[h], bias[h] = vec(), vec(), vec()
		movInt(mem(zsp, width*h), zs[h])
		c.VMOVUPS(mem(swp, width*h), sw[h])
		c.VMOVUPS(mem(bp, width*h), bias[h])
	}
	c.SHLQ(operand.U8(2), ldy)
	c.Label(name + "_loop")
	sb, xb := vec(), vec()
	c.VPBROADCASTD(mem(sum, 0), sb)
	c.VBROADCASTSS(mem(sx, 0), xb)
	for h := range halves {
		a, t, s := vec(), vec(), vec()
		c.VPMULLD(sb, zs[h], t)
		movInt(mem(acc, width*h), a)
		c.VPSUBD(t, a, a)
		c.VCVTDQ2PS(a, a)
		c.VMULPS(sw[h], xb, s)
		c.VMULPS(s, a, a)
		c.VADDPS(bias[h], a, a)
		c.VMOVUPS(a, mem(y, width*h))
	}
	c.ADDQ(operand.U32(64), acc)
	c.ADDQ(operand.U32(4), sum)
	c.ADDQ(operand.U32(4), sx)
	c.ADDQ(ldy, y)
	c.DECQ(rows)
	c.JNZ(operand.LabelRef(name + "_loop"))
	c.VZEROUPPER()
	c.RET()
}

// FusedMaxBits is the widest bit-width with a fused AVX2 unpack+dot kernel:
// up to it, at least two k-groups of VPMADDUBSW results are summed in int16
// before widening (FusedFlush(b) ≥ 2). runtime/kernels runs them only on
// work items of few rows: from about 256 rows on, re-unpacking two bit planes
// per block of 4 rows (b = 5, 6) and, at b = 6, the accumulator
// read-modify-write every two groups made them slower than Unpack+Dot
// (BenchmarkTile, thread CPU time).
const FusedMaxBits = 6

// FusedFlush returns the number of k-groups (1, 2, 4 or 8) whose VPMADDUBSW
// int16 pair sums the fused kernel adds with VPADDW before widening them:
// each pair sum is at most 2·(2^b−1)·127 in magnitude, and f of them must
// stay within int16.
func FusedFlush(b int) int {
	f := 8
	for f > 1 && f*2*(1<<b-1)*qformat.ActMax > 32767 {
		f /= 2
	}
	return f
}

// fusedAVX2 emits fusedB<b>AVX2Asm(acc *int32, src *byte, x *int8, ldx, rows, blocks int):
//
//	acc[r·16+j] += Σ_{k<blocks·32} q[j,k]·x[r·ldx+k]
//
// for r < rows (≥ 1), reading blocks (≥ 1) packed superblocks of a b-bit tile
// (b ≤ FusedMaxBits) and unpacking each k-group in registers (no unpacked
// buffer). VPMADDUBSW's int16 pair sums of FusedFlush(b) consecutive groups
// are added with VPADDW (no overflow: see FusedFlush), then widened with
// VPMADDWD and added to acc in memory.
func fusedAVX2(c *build.Context, name string, b int) { int16DotAVX2(c, name, b, FusedFlush(b), false) }

// dot16AVX2 emits dot16F<fl>AVX2Asm(acc *int32, w *byte, x *int8, ldx, rows, blocks int),
// the dot micro-kernel on unpacked weights (blocks superblocks of 8 k-groups)
// with VPMADDUBSW results of fl groups summed in int16 before widening: for
// weights below 2^b with FusedFlush(b) ≥ fl.
func dot16AVX2(c *build.Context, name string, fl int) { int16DotAVX2(c, name, 0, fl, true) }

// int16DotAVX2 emits the fused kernel (b-bit packed weights unpacked in
// registers) or, with unpacked, the int16-accumulating dot kernel.
func int16DotAVX2(c *build.Context, name string, b, fl int, unpacked bool) {
	c.Function(name)
	c.Attributes(attr.NOSPLIT)
	c.Pragma("noescape")
	if unpacked {
		c.SignatureExpr("func(acc *int32, w *byte, x *int8, ldx, rows, blocks int)")
		c.Doc(fmt.Sprintf("%s is the AVX2 dot micro-kernel on unpacked weights, %d rows per block, int16 sums over %d k-groups.", name, AVX2Rows, fl))
	} else {
		c.SignatureExpr("func(acc *int32, src *byte, x *int8, ldx, rows, blocks int)")
		c.Doc(fmt.Sprintf("%s is the fused AVX2 unpack+dot kernel of %d-bit tiles, %d rows per block, int16 sums over %d k-groups.", name, b, AVX2Rows, fl))
	}
	acc := c.Load(c.Param("acc"), c.GP64())
	srcName, step := "src", 0
	if unpacked {
		srcName, step = "w", qformat.BlockWeights
	} else {
		step = qformat.BlockBytes(b)
	}
	src := c.Load(c.Param(srcName), c.GP64())
	xp := c.Load(c.Param("x"), c.GP64())
	ldx := c.Load(c.Param("ldx"), c.GP64())
	rows := c.Load(c.Param("rows"), c.GP64())
	blocks := c.Load(c.Param("blocks"), c.GP64())
	ldx3 := c.GP64()
	c.LEAQ(memIdx(ldx, ldx, 2), ldx3)
	ones := bcastConst32(c, 0x00010001, false)
	var planes, shifts, offs []int
	var masks []reg.VecVirtual
	if !unpacked {
		planes, shifts, offs = qformat.Planes(b), qformat.PlaneShifts(b), qformat.PlaneOffsets(b)
		masks = make([]reg.VecVirtual, len(planes))
		for pi, p := range planes {
			masks[pi] = bcastConst32(c, rep8(uint8((1<<p-1)<<shifts[pi])), false)
		}
	}

	block := func(nr int, label string) {
		sp, x0, cnt := c.GP64(), c.GP64(), c.GP64()
		c.MOVQ(src, sp)
		c.MOVQ(xp, x0)
		c.MOVQ(blocks, cnt)
		c.Label(label)
		var a16 [AVX2Rows][2]reg.VecVirtual
		for g := 0; g < qformat.GroupsPerBlock; g++ {
			var w [2]reg.VecVirtual
			for h := 0; h < 2; h++ {
				if unpacked {
					w[h] = c.YMM()
					c.VMOVDQU(mem(sp, g*qformat.GroupBytes+h*32), w[h])
					continue
				}
				for pi, p := range planes {
					per := 8 / p
					blk := offs[pi] + g/per*qformat.GroupBytes + h*32
					r := (g%per)*p - shifts[pi]
					v := c.YMM()
					if r == 0 {
						c.VPAND(mem(sp, blk), masks[pi], v)
					} else {
						c.VMOVDQU(mem(sp, blk), v)
						if r > 0 {
							c.VPSRLW(operand.U8(r), v, v)
						} else {
							c.VPSLLW(operand.U8(-r), v, v)
						}
						c.VPAND(masks[pi], v, v)
					}
					if w[h] == nil {
						w[h] = v
					} else {
						c.VPOR(v, w[h], w[h])
					}
				}
			}
			first := g%fl == 0
			for r := 0; r < nr; r++ {
				var xm operand.Mem
				switch r {
				case 0:
					xm = mem(x0, g*qformat.KGroup)
				case 1:
					xm = memIdx(x0, ldx, 1)
				case 2:
					xm = memIdx(x0, ldx, 2)
				case 3:
					xm = memIdx(x0, ldx3, 1)
				}
				xm.Disp = g * qformat.KGroup
				bx := c.YMM()
				c.VPBROADCASTD(xm, bx)
				for h := 0; h < 2; h++ {
					if first {
						a16[r][h] = c.YMM()
						c.VPMADDUBSW(bx, w[h], a16[r][h])
						continue
					}
					t := c.YMM()
					c.VPMADDUBSW(bx, w[h], t)
					c.VPADDW(t, a16[r][h], a16[r][h])
				}
			}
			if g%fl == fl-1 {
				for r := 0; r < nr; r++ {
					for h := 0; h < 2; h++ {
						t := c.YMM()
						m := mem(acc, (r*qformat.TileN+h*8)*4)
						c.VPMADDWD(ones, a16[r][h], t)
						c.VPADDD(m, t, t)
						c.VMOVDQU(t, m)
					}
				}
			}
		}
		c.ADDQ(operand.U32(step), sp)
		c.ADDQ(operand.U32(qformat.BlockK), x0)
		c.DECQ(cnt)
		c.JNZ(operand.LabelRef(label))
	}

	c.Label(name + "_rows4")
	c.CMPQ(rows, operand.U32(AVX2Rows))
	c.JL(operand.LabelRef(name + "_rows1"))
	block(AVX2Rows, name+"_k4")
	c.ADDQ(operand.U32(AVX2Rows*qformat.TileN*4), acc)
	c.LEAQ(memIdx(xp, ldx, 4), xp)
	c.SUBQ(operand.U32(AVX2Rows), rows)
	c.JMP(operand.LabelRef(name + "_rows4"))

	c.Label(name + "_rows1")
	c.TESTQ(rows, rows)
	c.JZ(operand.LabelRef(name + "_done"))
	block(1, name+"_k1")
	c.ADDQ(operand.U32(qformat.TileN*4), acc)
	c.ADDQ(ldx, xp)
	c.DECQ(rows)
	c.JMP(operand.LabelRef(name + "_rows1"))

	c.Label(name + "_done")
	c.VZEROUPPER()
	c.RET()
}

// Dot16Flushes are the int16 group counts of the generated dot16 kernels.
var Dot16Flushes = []int{4, 8}

// Dot16Flush returns the dot16 kernel (its int16 group count) for b-bit
// weights on the AVX2 tier, or 0 to use the plain dot kernel.
func Dot16Flush(b int) int {
	f := FusedFlush(b)
	for i := len(Dot16Flushes) - 1; i >= 0; i-- {
		if Dot16Flushes[i] <= f {
			return Dot16Flushes[i]
		}
	}
	return 0
}

// quantRows8AVX2 emits
//
//	quantRows8AVX2Asm(q *int8, x *float32, k, kp, rows int, scale *float32, sum *int32)
//
// the whole activation quantizer for k a positive multiple of 8 (rows ≥ 1):
// for each row m (x at m·k, q at m·kp) it computes maxabs, then exactly
// qformat.ActInv (inv = 127/maxabs and scale = maxabs/127 with VDIVSS, both
// 0 unless maxabs ≥ MinActScale and finite), writes q = clamp(RoundToEven(x·inv),
// −127, 127) eight values at a time, zeroes q[k:kp], and stores scale[m] and
// sum[m] = Σ q. One call per matrix: no per-row call or tail overhead.
func quantRows8AVX2(c *build.Context) {
	name := "quantRows8AVX2Asm"
	c.Function(name)
	c.Attributes(attr.NOSPLIT)
	c.Pragma("noescape")
	c.SignatureExpr("func(q *int8, x *float32, k, kp, rows int, scale *float32, sum *int32)")
	c.Doc(name + " quantizes rows ≥ 1 rows of k (a positive multiple of 8) values into rows of kp bytes.")
	q := c.Load(c.Param("q"), c.GP64())
	x := c.Load(c.Param("x"), c.GP64())
	k := c.Load(c.Param("k"), c.GP64())
	kp := c.Load(c.Param("kp"), c.GP64())
	rows := c.Load(c.Param("rows"), c.GP64())
	sc := c.Load(c.Param("scale"), c.GP64())
	sm := c.Load(c.Param("sum"), c.GP64())
	absMask := bcastConst32(c, 0x7fffffff, false)
	hi := bcastConst32(c, ActMaxU32, false)
	lo := bcastConst32(c, ^ActMaxU32+1, false)
	f32 := func(v float32) reg.VecVirtual {
		t := c.GP32()
		c.MOVL(operand.U32(math.Float32bits(v)), t)
		r := c.XMM()
		c.VMOVD(t, r)
		return r
	}
	actMax := f32(qformat.ActMax)
	minScale := f32(qformat.MinActScale)
	inf := f32(float32(math.Inf(1)))
	zero := c.XMM()
	c.VXORPS(zero, zero, zero)

	c.Label(name + "_row")
	// max |x| over the row.
	xp, n := c.GP64(), c.GP64()
	c.MOVQ(x, xp)
	c.MOVQ(k, n)
	m := c.YMM()
	c.VXORPS(m, m, m)
	c.Label(name + "_max")
	t := c.YMM()
	c.VANDPS(mem(xp, 0), absMask, t)
	c.VMAXPS(t, m, m)
	c.ADDQ(operand.U32(32), xp)
	c.SUBQ(operand.U32(8), n)
	c.JNZ(operand.LabelRef(name + "_max"))
	mh := c.XMM()
	c.VEXTRACTF128(operand.U8(1), m, mh)
	ml := m.AsX()
	c.VMAXPS(mh, ml, ml)
	c.VPSHUFD(operand.U8(0x4e), ml, mh)
	c.VMAXPS(mh, ml, ml)
	c.VPSHUFD(operand.U8(0xb1), ml, mh)
	c.VMAXPS(mh, ml, ml)
	// ActInv: valid = maxabs ≥ MinActScale && maxabs ≠ +Inf (false for NaN).
	ok1, ok2 := c.XMM(), c.XMM()
	c.VCMPSS(operand.U8(0x1d), minScale, ml, ok1) // GE_OQ: ml ≥ minScale
	c.VCMPSS(operand.U8(0x0c), inf, ml, ok2)      // NEQ_OQ: ml ≠ +Inf
	c.VANDPS(ok2, ok1, ok1)
	inv, s := c.XMM(), c.XMM()
	c.VDIVSS(ml, actMax, inv) // 127 / maxabs
	c.VDIVSS(actMax, ml, s)   // maxabs / 127
	c.VANDPS(ok1, inv, inv)
	c.VANDPS(ok1, s, s)
	c.VMOVSS(s, mem(sc, 0))
	invY := c.YMM()
	c.VBROADCASTSS(inv, invY)
	// Quantize eight values at a time.
	qp := c.GP64()
	c.MOVQ(x, xp)
	c.MOVQ(q, qp)
	c.MOVQ(k, n)
	acc := c.YMM()
	c.VPXOR(acc, acc, acc)
	c.Label(name + "_quant")
	v := c.YMM()
	c.VMULPS(mem(xp, 0), invY, v)
	c.VCVTPS2DQ(v, v)
	c.VPMINSD(hi, v, v)
	c.VPMAXSD(lo, v, v)
	c.VPADDD(v, acc, acc)
	vh := c.XMM()
	c.VEXTRACTI128(operand.U8(1), v, vh)
	vl := v.AsX()
	c.VPACKSSDW(vh, vl, vl)
	c.VPACKSSWB(vl, vl, vl)
	c.VMOVQ(vl, mem(qp, 0))
	c.ADDQ(operand.U32(32), xp)
	c.ADDQ(operand.U32(8), qp)
	c.SUBQ(operand.U32(8), n)
	c.JNZ(operand.LabelRef(name + "_quant"))
	// Zero the padding q[k:kp] (a multiple of 8 bytes).
	pad := c.GP64()
	c.MOVQ(kp, pad)
	c.SUBQ(k, pad)
	c.JZ(operand.LabelRef(name + "_sum"))
	z := c.GP64()
	c.XORQ(z, z)
	c.Label(name + "_pad")
	c.MOVQ(z, mem(qp, 0))
	c.ADDQ(operand.U32(8), qp)
	c.SUBQ(operand.U32(8), pad)
	c.JNZ(operand.LabelRef(name + "_pad"))
	c.Label(name + "_sum")
	ah := c.XMM()
	c.VEXTRACTI128(operand.U8(1), acc, ah)
	al := acc.AsX()
	c.VPADDD(ah, al, al)
	c.VPSHUFD(operand.U8(0x4e), al, ah)
	c.VPADDD(ah, al, al)
	c.VPSHUFD(operand.U8(0xb1), al, ah)
	c.VPADDD(ah, al, al)
	c.VMOVD(al, mem(sm, 0))
	// Next row.
	c.MOVQ(xp, x)
	c.ADDQ(kp, q)
	c.ADDQ(operand.U32(4), sc)
	c.ADDQ(operand.U32(4), sm)
	c.DECQ(rows)
	c.JNZ(operand.LabelRef(name + "_row"))
	c.VZEROUPPER()
	c.RET()
}

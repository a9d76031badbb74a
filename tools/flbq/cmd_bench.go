package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"

	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/cputime"
	"github.com/flbq/flbq/runtime/kernels"
	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/qformat"
)

func init() {
	register(&cli.Command{
		Name:  "bench",
		Usage: "measure the speed of this machine for quantized inference",
		Subcommands: []*cli.Command{{
			Name:      "kernels",
			Usage:     "GOPS of the quantized matmul kernels per bit-width and CPU tier, next to the int8 peak and fp32 GEMM",
			ArgsUsage: " ",
			Description: `Runs, in one process, QLinear.Forward (activation quantization included)
   for every bit-width and CPU tier at the given shapes, the register-only int8
   multiply-accumulate peak of each tier (one core), and two fp32 baselines at
   the same shapes: gonum's blas32 Sgemm and the project's runtime/nn GEMM.
   GOPS = 2·M·N·K per CPU second of the process (the wall clock where the OS
   has no CPU clock); each figure is the median of --reps batches.

   A shape MxKxN is M activation rows, K inputs, N outputs, e.g. 196x768x2304
   (a ViT-B qkv projection over 14×14 tokens). --tiers defaults to the tiers
   this CPU runs except purego (slow; ask for it with --tiers purego or all).
   The figures are per core (one goroutine per call) unless --threads is given.`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "bits", Value: "1-8", Usage: "bit-widths: a range `B-B` or a list 2,4,8"},
				&cli.StringSliceFlag{Name: "shape", Usage: "`MxKxN` (repeatable; default 196x768x2304 and 1x4096x1024)"},
				&cli.StringFlag{Name: "tiers", Usage: "comma-separated tiers (vnni, avx2, purego) or all"},
				&cli.DurationFlag{Name: "time", Value: 100 * time.Millisecond, Usage: "minimum `DURATION` of one batch"},
				&cli.IntFlag{Name: "reps", Value: 3, Usage: "batches per figure (the median is reported)"},
				&cli.BoolFlag{Name: "json", Usage: "print the results as JSON"},
			},
			Action: runBenchKernels,
		}},
	})
}

type benchShape struct{ M, K, N int }

func (s benchShape) String() string { return fmt.Sprintf("%dx%dx%d", s.M, s.K, s.N) }
func (s benchShape) ops() float64   { return 2 * float64(s.M) * float64(s.K) * float64(s.N) }

func parseShape(v string) (benchShape, error) {
	p := strings.Split(strings.ToLower(v), "x")
	if len(p) != 3 {
		return benchShape{}, fmt.Errorf("bad shape %q: want MxKxN, e.g. 196x768x2304", v)
	}
	var d [3]int
	for i, s := range p {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return benchShape{}, fmt.Errorf("bad shape %q: want MxKxN with positive integers", v)
		}
		d[i] = n
	}
	if d[1] > qformat.MaxK {
		return benchShape{}, fmt.Errorf("shape %q: K exceeds %d", v, qformat.MaxK)
	}
	return benchShape{d[0], d[1], d[2]}, nil
}

func parseBits(v string) ([]int, error) {
	var bits []int
	for _, part := range strings.Split(v, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err1 := strconv.Atoi(lo)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a < qformat.MinBits || b > qformat.MaxBits || a > b {
			return nil, fmt.Errorf("bad --bits %q: want a range like 1-8 or a list like 2,4,8 within 1..8", v)
		}
		for x := a; x <= b; x++ {
			if !slices.Contains(bits, x) {
				bits = append(bits, x)
			}
		}
	}
	return bits, nil
}

// Bench JSON (and table) records.
type benchReport struct {
	Format     string           `json:"format"`
	CPU        string           `json:"cpu"`
	GOARCH     string           `json:"goarch"`
	GOMAXPROCS int              `json:"gomaxprocs"`
	Tiers      []string         `json:"usable_tiers"`
	Threads    int              `json:"threads"`
	Peak       []benchPeak      `json:"int8_peak"`
	FP32       []benchBaseline  `json:"fp32"`
	Results    []benchKernelRes `json:"results"`
}

type benchPeak struct {
	Tier string  `json:"tier"`
	GOPS float64 `json:"gops"`
}

type benchBaseline struct {
	Impl  string  `json:"impl"`
	Shape string  `json:"shape"`
	NsOp  float64 `json:"ns_per_op"`
	GOPS  float64 `json:"gops"`
}

type benchKernelRes struct {
	Tier    string  `json:"tier"`
	Bits    int     `json:"bits"`
	Shape   string  `json:"shape"`
	NsOp    float64 `json:"ns_per_op"`
	GOPS    float64 `json:"gops"`
	VsBits8 float64 `json:"time_vs_b8,omitempty"`
	VsPeak  float64 `json:"fraction_of_peak,omitempty"`
}

// clock is the process CPU time (the machines are shared: wall time
// counts other jobs), or the wall clock where the OS gives no CPU clock.
func clock() time.Duration {
	if t := cputime.Process(); t > 0 {
		return t
	}
	return time.Duration(time.Now().UnixNano())
}

// measure returns the median CPU time of one call of f over reps batches
// of at least minTime each.
func measure(f func(), minTime time.Duration, reps int) float64 {
	f() // warm up (pools, caches)
	n := 1
	for {
		t0 := clock()
		for i := 0; i < n; i++ {
			f()
		}
		if d := clock() - t0; d >= minTime || n >= 1<<24 {
			break
		}
		n *= 2
	}
	ts := make([]float64, max(reps, 1))
	for r := range ts {
		t0 := clock()
		for i := 0; i < n; i++ {
			f()
		}
		ts[r] = float64((clock() - t0).Nanoseconds()) / float64(n)
	}
	slices.Sort(ts)
	return ts[len(ts)/2]
}

func cpuModel() string {
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				return strings.TrimSpace(v)
			}
		}
	}
	return runtime.GOARCH
}

func runBenchKernels(c *cli.Context) error {
	bits, err := parseBits(c.String("bits"))
	if err != nil {
		return err
	}
	specs := c.StringSlice("shape")
	if len(specs) == 0 {
		specs = []string{"196x768x2304", "1x4096x1024"}
	}
	var shapes []benchShape
	for _, s := range specs {
		sh, err := parseShape(s)
		if err != nil {
			return err
		}
		shapes = append(shapes, sh)
	}
	threads := 1
	if c.IsSet("threads") {
		threads = backend.Threads()
	}
	defer backend.SetThreads(backend.SetThreads(threads))
	var usable []string
	for _, t := range backend.Usable() {
		usable = append(usable, t.String())
	}
	var tiers []string
	switch t := c.String("tiers"); t {
	case "":
		for _, u := range usable {
			if u != "purego" {
				tiers = append(tiers, u)
			}
		}
		if len(tiers) == 0 {
			tiers = []string{"purego"}
		}
	case "all":
		tiers = usable
	default:
		for _, name := range strings.Split(t, ",") {
			name = strings.TrimSpace(name)
			if !slices.Contains(usable, name) {
				return fmt.Errorf("tier %q is not usable on this CPU (usable: %s)", name, strings.Join(usable, ", "))
			}
			tiers = append(tiers, name)
		}
	}
	minTime, reps := c.Duration("time"), c.Int("reps")
	defer backend.SetTier(backend.Active().String())

	rep := benchReport{Format: "flbq.bench.kernels/v1", CPU: cpuModel(), GOARCH: runtime.GOARCH,
		GOMAXPROCS: runtime.GOMAXPROCS(0), Tiers: usable, Threads: threads}
	peaks := map[string]float64{}
	for _, t := range tiers {
		if t == "purego" {
			continue
		}
		tier, err := backend.ParseTier(t)
		if err != nil {
			return err
		}
		var macs int64
		ns := measure(func() { macs = kernels.Peak(tier, 1<<14) }, minTime, reps)
		peaks[t] = 2 * float64(macs) / ns
		rep.Peak = append(rep.Peak, benchPeak{t, peaks[t]})
	}
	rng := rand.New(rand.NewPCG(1, 2))
	randn := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	for _, s := range shapes {
		x, w, y := randn(s.M*s.K), randn(s.N*s.K), make([]float32, s.M*s.N)
		// gonum's Sgemm threads itself over GOMAXPROCS: cap it like ours.
		old := runtime.GOMAXPROCS(threads)
		ns := measure(func() {
			blas32.Gemm(blas.NoTrans, blas.Trans, 1, blas32.General{Rows: s.M, Cols: s.K, Stride: s.K, Data: x},
				blas32.General{Rows: s.N, Cols: s.K, Stride: s.K, Data: w}, 0, blas32.General{Rows: s.M, Cols: s.N, Stride: s.N, Data: y})
		}, minTime, reps)
		runtime.GOMAXPROCS(old)
		rep.FP32 = append(rep.FP32, benchBaseline{"gonum-sgemm", s.String(), ns, s.ops() / ns})
		ns = measure(func() {
			nn.ParallelFor(s.M, 1, func(lo, hi int) {
				nn.MatMul(true, hi-lo, s.N, s.K, x[lo*s.K:], s.K, w, s.K, y[lo*s.N:], s.N, false)
			})
		}, minTime, reps)
		rep.FP32 = append(rep.FP32, benchBaseline{"flbq-nn", s.String(), ns, s.ops() / ns})

		for _, t := range tiers {
			if got, err := backend.SetTier(t); err != nil || got.String() != t {
				return fmt.Errorf("tier %s: cannot run it here (active: %s, %v)", t, got, err)
			}
			var b8 float64
			var rows []benchKernelRes
			for _, b := range bits {
				l, err := kernels.QuantizeLinear(w, s.N, s.K, qformat.UniformBits(s.N, b), qformat.MinMax, nil)
				if err != nil {
					return err
				}
				var ferr error
				ns := measure(func() { ferr = l.Forward(y, x, s.M) }, minTime, reps)
				if ferr != nil {
					return ferr
				}
				r := benchKernelRes{Tier: t, Bits: b, Shape: s.String(), NsOp: ns, GOPS: s.ops() / ns}
				if p := peaks[t]; p > 0 {
					r.VsPeak = r.GOPS / (p * float64(threads))
				}
				if b == 8 {
					b8 = ns
				}
				rows = append(rows, r)
			}
			for i := range rows {
				if b8 > 0 {
					rows[i].VsBits8 = rows[i].NsOp / b8
				}
			}
			rep.Results = append(rep.Results, rows...)
		}
	}
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return printBench(c.App.Writer, &rep)
}

func printBench(out io.Writer, r *benchReport) error {
	fmt.Fprintf(out, "cpu: %s (%s, GOMAXPROCS %d), usable tiers: %s, threads per call: %d\n",
		r.CPU, r.GOARCH, r.GOMAXPROCS, strings.Join(r.Tiers, ", "), r.Threads)
	if !slices.Contains(r.Tiers, "vnni") {
		fmt.Fprintln(out, "note: no AVX-512 VNNI on this CPU; the vnni tier cannot run here")
	}
	for _, p := range r.Peak {
		fmt.Fprintf(out, "int8 peak (%s, register-only, one core): %.1f GOPS\n", p.Tier, p.GOPS)
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "shape\timpl\tbits\ttime\tGOPS\ttime/b8\tof peak\t")
	for _, b := range r.FP32 {
		fmt.Fprintf(tw, "%s\t%s\tfp32\t%s\t%.1f\t\t\t\n", b.Shape, b.Impl, fmtNs(b.NsOp), b.GOPS)
	}
	for _, k := range r.Results {
		vs, pk := "", ""
		if k.VsBits8 > 0 {
			vs = fmt.Sprintf("%.2f", k.VsBits8)
		}
		if k.VsPeak > 0 {
			pk = fmt.Sprintf("%.0f%%", 100*k.VsPeak)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%.1f\t%s\t%s\t\n", k.Shape, k.Tier, k.Bits, fmtNs(k.NsOp), k.GOPS, vs, pk)
	}
	return tw.Flush()
}

func fmtNs(ns float64) string {
	switch {
	case ns >= 1e6:
		return fmt.Sprintf("%.2fms", ns/1e6)
	case ns >= 1e3:
		return fmt.Sprintf("%.1fµs", ns/1e3)
	}
	return fmt.Sprintf("%.0fns", ns)
}

// Command benchpeers is `make bench-peers`: it trains the FedAvg paper's
// models (mlp, the 2NN, and cnn) with PyTorch (Debian's python3-torch, run
// by torch_peer.py), with fedge's WASM engine (package edgeagent/runtime,
// as agents run it: wazero with a deadline check at every loop header) and,
// for mlp, with the native Go engine (edgeagent/native on gonum), on the
// same batch sizes and thread counts. Engines alternate, config by config
// and round by round, so that they see the same machine load; every ratio
// printed is the median over the rounds. The SIMD128 peak of the sandbox
// (wasm-models' SIMDPeak kernel) is measured in the same run, so each
// model's GFLOP/s is also printed as a fraction of it. It is a benchmark,
// not a test: nothing here is asserted.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fedge-dev/fedge/edgeagent/data"
	"github.com/fedge-dev/fedge/edgeagent/native"
	"github.com/fedge-dev/fedge/edgeagent/runtime"
	"github.com/fedge-dev/fedge/wasm-models"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// flopsPerSample is the floating-point operations of training on one
// sample: forward, weight gradient and (except for the first layer, whose
// input needs none) input gradient, two per multiply-add; biases,
// activations and pooling are not counted.
var flopsPerSample = map[string]float64{
	// 784x200 (forward + weight gradient), 200x200 and 200x10 (three each)
	"mlp": 2 * (2*784*200 + 3*(200*200+200*10)),
	// conv1 784 pixels x 25 x 32 (two), conv2 196 x 800 x 64, fc1 3136x512,
	// fc2 512x10 (three each)
	"cnn": 2 * (2*784*25*32 + 3*(196*800*64+3136*512+512*10)),
}

type config struct {
	model   string
	batch   int
	threads int
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-peers:", err)
		os.Exit(1)
	}
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil || v < 1 || v > 64 {
			return nil, fmt.Errorf("%q: want integers in 1..64", s)
		}
		out = append(out, v)
	}
	return out, nil
}

func run() error {
	modelsFlag := flag.String("models", "mlp,cnn", "models to train (mlp, cnn)")
	singleFlag := flag.String("single", "10", "batch sizes measured on one thread")
	threadedFlag := flag.String("threaded", "32,64", "batch sizes measured on 1 and -threads threads")
	threads := flag.Int("threads", 2, "threads of the multi-threaded measurements (2 to 64)")
	rounds := flag.Int("rounds", 3, "alternations (the ratios are their medians; at least 3)")
	seconds := flag.Float64("seconds", 2, "seconds per engine and round (at least 3 steps)")
	python := flag.String("python", "/usr/bin/python3", "Python with Debian's python3-torch")
	script := flag.String("torch-script", "scripts/benchpeers/torch_peer.py", "the PyTorch peer")
	flag.Parse()
	var models []string
	for _, m := range strings.Split(*modelsFlag, ",") {
		if _, ok := flopsPerSample[m]; !ok {
			return fmt.Errorf("-models: unknown model %q (have mlp, cnn)", m)
		}
		models = append(models, m)
	}
	single, err := ints(*singleFlag)
	if err != nil {
		return fmt.Errorf("-single: %w", err)
	}
	threaded, err := ints(*threadedFlag)
	if err != nil {
		return fmt.Errorf("-threaded: %w", err)
	}
	if *threads < 2 || *threads > 64 || *rounds < 3 || *rounds > 100 || !(*seconds > 0 && *seconds <= 600) {
		return errors.New("want -threads in 2..64, -rounds in 3..100, -seconds in (0, 600]")
	}
	ctx := context.Background()

	// one PyTorch process per thread count: OpenBLAS takes its thread
	// count from the environment only
	peers := map[int]*torchPeer{}
	defer func() {
		for _, p := range peers {
			_ = p.close()
		}
	}()
	peerFor := func(threads int) (*torchPeer, error) {
		if p := peers[threads]; p != nil {
			return p, nil
		}
		p, err := startTorch(*python, *script, threads)
		if err != nil {
			return nil, err
		}
		peers[threads] = p
		return p, nil
	}
	peer, err := peerFor(1)
	if err != nil {
		return err
	}

	var configs []config
	for _, m := range models {
		for _, b := range single {
			configs = append(configs, config{m, b, 1})
		}
	}
	for _, m := range models {
		for _, b := range threaded {
			configs = append(configs, config{m, b, 1}, config{m, b, *threads})
		}
	}
	host, err := runtime.NewHost(ctx, runtime.Config{})
	if err != nil {
		return err
	}
	defer host.Close(ctx)
	w := newWasm(host)
	defer w.close(ctx)

	fmt.Printf("fedge peer benchmark: %d alternations of %.1f s per engine and config; %s; %d CPUs, GOMAXPROCS %d\n",
		*rounds, *seconds, peer.version, goruntime.NumCPU(), goruntime.GOMAXPROCS(0))
	// The peak is sampled once per config and round, between the engines,
	// so that it sees the same load as they do.
	var peaksHost, peaksFree []float64
	samplePeak := func() error {
		h, f, err := simdPeak(ctx, 1, *seconds/2)
		peaksHost, peaksFree = append(peaksHost, h), append(peaksFree, f)
		return err
	}

	// rates[config][engine] over rounds
	type key struct {
		c      config
		engine string
	}
	rates := map[key][]float64{}
	for _, c := range configs {
		engines := []string{"torch", "wasm"}
		if c.model == "mlp" && c.threads == 1 {
			engines = append(engines, "native")
		}
		for r := 0; r < *rounds; r++ {
			if err := samplePeak(); err != nil {
				return err
			}
			for _, e := range engines {
				var rate float64
				switch e {
				case "torch":
					var p *torchPeer
					if p, err = peerFor(c.threads); err == nil {
						rate, err = p.measure(c, *seconds)
					}
				case "wasm":
					rate, err = w.measure(ctx, c, *seconds)
				case "native":
					rate, err = measureNative(c, *seconds)
				}
				if err != nil {
					return fmt.Errorf("%s %s B=%d threads=%d: %w", e, c.model, c.batch, c.threads, err)
				}
				rates[key{c, e}] = append(rates[key{c, e}], rate)
			}
		}
		fmt.Fprintf(os.Stderr, "measured %s B=%d threads=%d\n", c.model, c.batch, c.threads)
	}
	ratio := func(a, b []float64) float64 {
		q := make([]float64, len(a))
		for i := range a {
			q[i] = a[i] / b[i]
		}
		return median(q)
	}

	peakHost, peakFree := median(peaksHost), median(peaksFree)
	fmt.Printf("\nWASM SIMD128 peak, independent f32x4 multiply-adds in loop-free blocks: %.1f GFLOP/s with the host's "+
		"deadline checks, %.1f GFLOP/s without (medians of %d samples taken between the engines)\n\n", peakHost,
		peakFree, len(peaksHost))
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Println("One thread (samples/s, medians; ratios are medians of the per-round ratios):")
	fmt.Fprintln(tw, "model\tB\tPyTorch\tWASM\tnative\tWASM/PyTorch\tnative/PyTorch\tWASM GFLOP/s\tof SIMD peak\t")
	for _, c := range configs {
		if c.threads != 1 || !slices.Contains(single, c.batch) {
			continue
		}
		t, wr, nr := rates[key{c, "torch"}], rates[key{c, "wasm"}], rates[key{c, "native"}]
		nat, natRatio := "-", "-"
		if nr != nil {
			nat, natRatio = fmt.Sprintf("%.0f", median(nr)), fmt.Sprintf("%.2f", ratio(nr, t))
		}
		gf := median(wr) * flopsPerSample[c.model] / 1e9
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%s\t%.2f\t%s\t%.1f\t%.0f%%\t\n", c.model, c.batch, median(t), median(wr), nat,
			ratio(wr, t), natRatio, gf, 100*gf/peakHost)
	}
	tw.Flush()
	fmt.Printf("\n%d threads against one (samples/s, medians):\n", *threads)
	tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "model\tB\tPyTorch 1\tPyTorch %d\tWASM 1\tWASM %d\tWASM speedup\tPyTorch speedup\tWASM %d/PyTorch %d\t\n",
		*threads, *threads, *threads, *threads)
	for _, c := range configs {
		if c.threads == 1 {
			continue
		}
		c1 := config{c.model, c.batch, 1}
		t1, tn := rates[key{c1, "torch"}], rates[key{c, "torch"}]
		w1, wn := rates[key{c1, "wasm"}], rates[key{c, "wasm"}]
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.0f\t%.0f\t%.2f\t%.2f\t%.2f\t\n", c.model, c.batch, median(t1), median(tn),
			median(w1), median(wn), ratio(wn, w1), ratio(tn, t1), ratio(wn, tn))
	}
	tw.Flush()
	fmt.Println("\nGFLOP/s count two operations per multiply-add of training (forward, weight and input gradients).")
	return nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// timed runs step until at least seconds have passed and at least three
// steps were taken, after two warm-up steps, and returns samples/s.
func timed(batch int, seconds float64, step func() error) (float64, error) {
	for i := 0; i < 2; i++ {
		if err := step(); err != nil {
			return 0, err
		}
	}
	n, t0 := 0, time.Now()
	for n < 3 || time.Since(t0).Seconds() < seconds {
		if err := step(); err != nil {
			return 0, err
		}
		n++
	}
	return float64(n*batch) / time.Since(t0).Seconds(), nil
}

func synthetic(n int) *data.Dataset {
	r := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, n*784)
	y := make([]int, n)
	for i := range x {
		x[i] = r.Float32()
	}
	for i := range y {
		y[i] = r.IntN(10)
	}
	ds, err := data.NewDataset(x, y, 784, 10)
	if err != nil {
		panic(err) // the shapes above are valid
	}
	return ds
}

var dataset = synthetic(64)

// wasmEngine keeps one Group per model and thread count.
type wasmEngine struct {
	host   *runtime.Host
	groups map[[2]string]*runtime.Group
}

func newWasm(h *runtime.Host) *wasmEngine {
	return &wasmEngine{host: h, groups: map[[2]string]*runtime.Group{}}
}

func (w *wasmEngine) close(ctx context.Context) {
	for _, g := range w.groups {
		_ = g.Close(ctx)
	}
}

func (w *wasmEngine) measure(ctx context.Context, c config, seconds float64) (float64, error) {
	k := [2]string{c.model, strconv.Itoa(c.threads)}
	g := w.groups[k]
	if g == nil {
		m, err := w.host.Compile(ctx, wasmmodels.MustGet(c.model).Wasm)
		if err != nil {
			return 0, err
		}
		if g, err = m.NewGroup(ctx, runtime.Options{MaxBatch: 64}, c.threads); err != nil {
			return 0, err
		}
		if g.Threads() != c.threads {
			return 0, fmt.Errorf("model %s trains on %d threads, not %d", c.model, g.Threads(), c.threads)
		}
		if err := g.Init(ctx, 1); err != nil {
			return 0, err
		}
		w.groups[k] = g
	}
	if c.batch > 64 {
		return 0, fmt.Errorf("batch %d over the instances' max_batch 64", c.batch)
	}
	idx := make([]int, c.batch)
	for i := range idx {
		idx[i] = i
	}
	return timed(c.batch, seconds, func() error {
		_, err := g.TrainBatch(ctx, dataset, idx, 0.01, 0)
		return err
	})
}

func measureNative(c config, seconds float64) (float64, error) {
	if c.model != "mlp" || c.threads != 1 {
		return 0, errors.New("the native engine has the mlp only, single-threaded")
	}
	m := native.NewMLP(784, 200, 200, 10)
	p := m.Params()
	r := rand.New(rand.NewPCG(3, 4))
	for i := range p {
		p[i] = float32(r.NormFloat64() * 0.05)
	}
	if err := m.SetParams(p); err != nil {
		return 0, err
	}
	prev := goruntime.GOMAXPROCS(1)
	defer goruntime.GOMAXPROCS(prev)
	x, y := dataset.X[:c.batch*784], dataset.Y[:c.batch]
	return timed(c.batch, seconds, func() error {
		m.TrainStep(x, y, c.batch, 0.01, 0, nil)
		return nil
	})
}

// simdPeak runs the SIMDPeak kernel under the host's runtime settings
// (compiler, deadline checks on) and without deadline checks, and returns
// the median GFLOP/s of rounds runs of each.
func simdPeak(ctx context.Context, rounds int, seconds float64) (withChecks, without float64, err error) {
	measure := func(checks bool) (float64, error) {
		rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(checks))
		defer rt.Close(ctx)
		mod, err := rt.Instantiate(ctx, wasmmodels.SIMDPeak)
		if err != nil {
			return 0, fmt.Errorf("simd peak: %w", err)
		}
		f := mod.ExportedFunction("simd_peak")
		if f == nil {
			return 0, errors.New("simd peak: no export simd_peak")
		}
		var res []float64
		blocks := uint64(1000)
		for len(res) < rounds {
			t0 := time.Now()
			if _, err := f.Call(ctx, blocks, api.EncodeF32(0.999), api.EncodeF32(0.001)); err != nil {
				return 0, fmt.Errorf("simd peak: %w", err)
			}
			d := time.Since(t0).Seconds()
			if d < seconds/4 {
				blocks *= 4
				continue
			}
			res = append(res, float64(blocks)*wasmmodels.SIMDPeakFlopsPerBlock/d/1e9)
		}
		return median(res), nil
	}
	if withChecks, err = measure(true); err != nil {
		return 0, 0, err
	}
	without, err = measure(false)
	return withChecks, without, err
}

// torchPeer is the PyTorch process, answering one measurement per line.
type torchPeer struct {
	cmd     *exec.Cmd
	in      io.WriteCloser
	out     *bufio.Scanner
	version string
}

func startTorch(python, script string, threads int) (*torchPeer, error) {
	if _, err := os.Stat(script); err != nil {
		return nil, fmt.Errorf("PyTorch peer %s: %w (run from the repository root)", script, err)
	}
	cmd := exec.Command(python, script)
	cmd.Stderr = os.Stderr
	n := strconv.Itoa(threads)
	cmd.Env = append(os.Environ(), "OPENBLAS_NUM_THREADS="+n, "OMP_NUM_THREADS="+n, "MKL_NUM_THREADS="+n)
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s %s: %w (Debian package python3-torch: make bench-peers installs it as root)",
			python, script, err)
	}
	p := &torchPeer{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	if !p.out.Scan() || !strings.HasPrefix(p.out.Text(), "ready ") {
		_ = p.close()
		return nil, fmt.Errorf("PyTorch peer did not start (is python3-torch installed for %s?)", python)
	}
	p.version = "PyTorch " + strings.TrimPrefix(p.out.Text(), "ready torch ")
	return p, nil
}

func (p *torchPeer) measure(c config, seconds float64) (float64, error) {
	if _, err := fmt.Fprintf(p.in, "%s %d %d %g\n", c.model, c.batch, c.threads, seconds); err != nil {
		return 0, fmt.Errorf("PyTorch peer: %w", err)
	}
	if !p.out.Scan() {
		return 0, errors.New("PyTorch peer exited")
	}
	line := p.out.Text()
	v, err := strconv.ParseFloat(line, 64)
	if err != nil || !(v > 0) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("PyTorch peer answered %q", line)
	}
	return v, nil
}

func (p *torchPeer) close() error {
	_ = p.in.Close()
	return p.cmd.Wait()
}

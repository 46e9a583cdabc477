package runtime

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"unsafe"

	"github.com/fedge-dev/fedge/edgeagent/data"
	"github.com/tetratelabs/wazero/api"
)

// MaxThreads bounds the instances of a Group.
const MaxThreads = 64

// Group trains one model with several instances of its module, one per
// thread, each with its own memory: a batch is split into contiguous
// shards, every instance computes the gradient of its shard (fedge_grad,
// ABI version 2), the host sums the shards' gradients and every instance
// applies the same sum (fedge_apply), so all of them keep identical
// parameters. A module of ABI version 1, or a group of one thread, trains
// on its first instance alone with fedge_train. For a given number of
// threads training is deterministic; a different number of threads sums
// the batch in a different order, so the parameters differ by rounding.
//
// A Group is not safe for concurrent use. When any call fails in a way
// that closes an instance (trap, deadline) the group must be closed and
// replaced.
type Group struct {
	ins    []*Instance
	params int
	grads  [][]float32 // per instance: a view of its fedge_grads buffer
	mem    []uint32    // memory size when grads[i] was taken
}

// NewGroup instantiates threads instances of m (1 to MaxThreads) with the
// same options. Only modules with the version 2 exports use more than one.
func (m *Module) NewGroup(ctx context.Context, opts Options, threads int) (*Group, error) {
	if threads < 1 || threads > MaxThreads {
		return nil, fmt.Errorf("new group: %w: %d threads, want 1 to %d", ErrShape, threads, MaxThreads)
	}
	if !m.grad {
		threads = 1
	}
	g := &Group{}
	for i := 0; i < threads; i++ {
		in, err := m.Instantiate(ctx, opts)
		if err != nil {
			_ = g.Close(ctx)
			return nil, fmt.Errorf("new group: instance %d: %w", i, err)
		}
		if !in.grad {
			// version 1 (the exports alone do not make version 2): the
			// first instance trains alone
			if i > 0 {
				_ = in.Close(ctx)
				_ = g.Close(ctx)
				return nil, fmt.Errorf("new group: %w: instances disagree on the ABI version", ErrModel)
			}
			g.ins = append(g.ins, in)
			break
		}
		g.ins = append(g.ins, in)
	}
	g.params = g.ins[0].meta.Params
	g.grads = make([][]float32, len(g.ins))
	g.mem = make([]uint32, len(g.ins))
	return g, nil
}

// Threads returns the number of instances that train in parallel.
func (g *Group) Threads() int { return len(g.ins) }

// Metadata returns the model's self-description.
func (g *Group) Metadata() Metadata { return g.ins[0].meta }

// Close closes every instance.
func (g *Group) Close(ctx context.Context) error {
	var errs []error
	for _, in := range g.ins {
		errs = append(errs, in.Close(ctx))
	}
	return errors.Join(errs...)
}

// each runs f on every instance in parallel and returns the first error.
func (g *Group) each(f func(i int, in *Instance) error) error {
	if len(g.ins) == 1 {
		return f(0, g.ins[0])
	}
	errs := make([]error, len(g.ins))
	var wg sync.WaitGroup
	for i, in := range g.ins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i, in)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Init sets every instance's parameters from the model's seeded
// initialiser (the same values in each).
func (g *Group) Init(ctx context.Context, seed uint64) error {
	return g.each(func(_ int, in *Instance) error { return in.Init(ctx, seed) })
}

// SetParams replaces the parameters of every instance.
func (g *Group) SetParams(ctx context.Context, p []float32) error {
	return g.each(func(_ int, in *Instance) error { return in.SetParams(ctx, p) })
}

// SetGlobal stores the round's global weights (FedProx) in every instance.
func (g *Group) SetGlobal(ctx context.Context, w []float32) error {
	return g.each(func(_ int, in *Instance) error { return in.SetGlobal(ctx, w) })
}

// Params returns a copy of the parameters (those of the first instance;
// all instances hold the same).
func (g *Group) Params(ctx context.Context) ([]float32, error) { return g.ins[0].Params(ctx) }

// ReadParams copies the parameters into dst.
func (g *Group) ReadParams(ctx context.Context, dst []float32) error {
	return g.ins[0].ReadParams(ctx, dst)
}

// Evaluate returns the mean loss and accuracy over src (on one instance).
func (g *Group) Evaluate(ctx context.Context, src data.Source) (EvalResult, error) {
	return g.ins[0].Evaluate(ctx, src)
}

// gradView returns instance i's gradient buffer as float32 values in
// place. The ABI is little-endian, as are the hosts this runs on; the view
// is re-taken whenever the module's memory has grown.
func (g *Group) gradView(ctx context.Context, i int) ([]float32, error) {
	in := g.ins[i]
	if g.grads[i] != nil && in.mod.Memory().Size() == g.mem[i] {
		return g.grads[i], nil
	}
	b, err := in.buffer(ctx, "fedge_grads", uint32(g.params)*4)
	if err != nil {
		return nil, err
	}
	if uintptr(unsafe.Pointer(&b[0]))%4 != 0 || !littleEndian {
		return nil, fmt.Errorf("%w: fedge_grads at an unaligned address or on a big-endian host", ErrModel)
	}
	g.grads[i] = unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), g.params)
	g.mem[i] = in.mod.Memory().Size()
	return g.grads[i], nil
}

var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// TrainBatch runs one SGD step on the given samples of src (at most
// MaxBatch of them) across the group's instances and returns the batch loss
// before the step.
func (g *Group) TrainBatch(ctx context.Context, src data.Source, idx []int, lr, mu float32) (StepResult, error) {
	in0 := g.ins[0]
	if err := in0.checkBatch(src, idx); err != nil {
		return StepResult{}, err
	}
	return g.step(ctx, src, idx, lr, mu)
}

func (g *Group) step(ctx context.Context, src data.Source, idx []int, lr, mu float32) (StepResult, error) {
	t := min(len(g.ins), len(idx))
	if t == 1 {
		in := g.ins[0]
		r, err := in.step(ctx, &in.bufs, src, idx, lr, mu)
		if err != nil || len(g.ins) == 1 {
			return r, err
		}
		// keep the other instances in step
		b, err := in.buffer(ctx, "fedge_params", uint32(g.params)*4)
		if err != nil {
			return r, err
		}
		err = g.each(func(i int, o *Instance) error {
			if i == 0 {
				return nil
			}
			dst, err := o.buffer(ctx, "fedge_params", uint32(g.params)*4)
			if err == nil {
				copy(dst, b)
			}
			return err
		})
		return r, err
	}
	// shards: t contiguous slices of idx, sizes differing by at most one
	results := make([]StepResult, t)
	scale := api.EncodeF32(1 / float32(len(idx)))
	err := g.each(func(i int, in *Instance) error {
		if i >= t {
			return nil
		}
		lo, hi := i*len(idx)/t, (i+1)*len(idx)/t
		if err := in.fill(ctx, &in.bufs, src, idx[lo:hi]); err != nil {
			return err
		}
		if err := in.status(ctx, "fedge_grad", uint64(hi-lo), scale); err != nil {
			return err
		}
		r, err := in.result(ctx, &in.bufs)
		results[i] = r
		return err
	})
	if err != nil {
		return StepResult{}, err
	}
	views := make([][]float32, len(g.ins))
	for i := range g.ins {
		if views[i], err = g.gradView(ctx, i); err != nil {
			return StepResult{}, err
		}
	}
	// Sum the shards' gradients, in shard order, into every instance's
	// buffer; each thread takes one range of parameters.
	n := len(g.ins)
	err = g.each(func(k int, _ *Instance) error {
		lo, hi := k*g.params/n, (k+1)*g.params/n
		sum := views[0][lo:hi]
		for s := 1; s < t; s++ {
			v := views[s][lo:hi]
			for j := range sum {
				sum[j] += v[j]
			}
		}
		for i := 1; i < n; i++ {
			copy(views[i][lo:hi], sum)
		}
		return nil
	})
	if err != nil {
		return StepResult{}, err
	}
	err = g.each(func(_ int, in *Instance) error {
		return in.status(ctx, "fedge_apply", api.EncodeF32(lr), api.EncodeF32(mu))
	})
	if err != nil {
		return StepResult{}, err
	}
	var r StepResult
	for _, x := range results {
		r.LossSum += x.LossSum
		r.Correct += x.Correct
	}
	return r, nil
}

// TrainEpochs trains on src as cfg describes, like Instance.TrainEpochs,
// with every batch split across the group.
func (g *Group) TrainEpochs(ctx context.Context, src data.Source, cfg TrainConfig) (TrainStats, error) {
	return trainEpochs(ctx, g.ins[0], src, cfg, g.SetGlobal, g.step)
}

package runtime

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/tetratelabs/wazero/api"
)

// Instance is one running copy of a model with its own memory and
// parameters. It is not safe for concurrent use. When a call traps or runs
// out of time the instance is closed (Closed reports it) and must be
// replaced; other errors leave it usable.
type Instance struct {
	module   *Module
	mod      api.Module
	fn       map[string]api.Function
	meta     Metadata
	maxPages uint32
	stack    [3]uint64
	bufs     bufs // views of the batch buffers, refreshed when memory grows
	closed   bool
	grad     bool // ABI version 2: fedge_grad and fedge_apply (see Group)
}

// Metadata returns the model's self-description.
func (in *Instance) Metadata() Metadata { return in.meta }

// Module returns the compiled module this instance runs.
func (in *Instance) Module() *Module { return in.module }

// Closed reports whether the instance was closed, by Close or by a trap or
// deadline.
func (in *Instance) Closed() bool { return in.closed }

// Close releases the instance's memory. It is idempotent.
func (in *Instance) Close(ctx context.Context) error {
	if in.closed {
		return nil
	}
	in.closed = true
	if err := in.mod.Close(ctx); err != nil {
		return fmt.Errorf("close instance: %w", err)
	}
	return nil
}

// call invokes an export with a deadline and returns its single result.
func (in *Instance) call(ctx context.Context, name string, args ...uint64) (uint64, error) {
	if in.closed {
		return 0, ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, in.module.host.cfg.CallTimeout)
	defer cancel()
	stack := in.stack[:]
	copy(stack, args)
	if err := in.fn[name].CallWithStack(ctx, stack); err != nil {
		cerr := classify(err, in.mod, in.maxPages)
		in.closed = true
		_ = in.mod.Close(context.Background())
		return 0, fmt.Errorf("%s: %w", name, cerr)
	}
	return stack[0], nil
}

// status calls an export returning an ABI status code and maps non-zero
// codes to ErrModel.
func (in *Instance) status(ctx context.Context, name string, args ...uint64) error {
	r, err := in.call(ctx, name, args...)
	if err != nil {
		return err
	}
	if code := int32(r); code != 0 {
		switch code {
		case codeNonFinite:
			return fmt.Errorf("%s: %w (code %d)", name, ErrNonFinite, code)
		case codeNoMemory:
			return fmt.Errorf("%s: %w: memory.grow failed (code %d, cap %d pages)", name, ErrMemoryLimit, code, in.maxPages)
		}
		return fmt.Errorf("%s: %w %d (%s)", name, ErrModel, code, codeName(code))
	}
	return nil
}

const (
	codeNoMemory  = -4
	codeNonFinite = -5
)

func codeName(c int32) string {
	switch c {
	case -1:
		return "invalid argument"
	case -2:
		return "label out of range"
	case -3:
		return "not set up"
	case -4:
		return "out of memory"
	case -5:
		return "non-finite"
	}
	return "unknown"
}

// buffer returns a writable view of n bytes of the buffer whose pointer the
// named export returns.
func (in *Instance) buffer(ctx context.Context, name string, n uint32) ([]byte, error) {
	p, err := in.call(ctx, name)
	if err != nil {
		return nil, err
	}
	b, ok := in.mod.Memory().Read(uint32(p), n)
	if !ok {
		return nil, fmt.Errorf("%s: buffer [%d,+%d) outside memory of %d bytes: %w", name, uint32(p), n,
			in.mod.Memory().Size(), ErrBadMetadata)
	}
	return b, nil
}

// bufs caches views of the batch buffers between calls. They are re-read
// whenever memory has grown (the Go model's allocator grows it), since a
// grown memory may have moved.
type bufs struct {
	inputs, labels, result []byte
	memSize                uint32
}

func (in *Instance) loadBufs(ctx context.Context, b *bufs) error {
	if b.inputs != nil && in.mod.Memory().Size() == b.memSize {
		return nil
	}
	var err error
	mb, dim := uint32(in.meta.MaxBatch), uint32(in.meta.InputLen())
	if b.inputs, err = in.buffer(ctx, "fedge_inputs", mb*dim*4); err != nil {
		return err
	}
	if b.labels, err = in.buffer(ctx, "fedge_labels", mb*4); err != nil {
		return err
	}
	if b.result, err = in.buffer(ctx, "fedge_result", 8); err != nil {
		return err
	}
	b.memSize = in.mod.Memory().Size()
	return nil
}

func (in *Instance) start(ctx context.Context, opts Options) error {
	v, err := in.call(ctx, "fedge_abi_version")
	if err != nil {
		return err
	}
	switch int32(v) {
	case 1:
	case 2:
		if !in.module.grad {
			return fmt.Errorf("%w: module implements version 2 but lacks fedge_grad, fedge_grads, fedge_apply",
				ErrMissingExport)
		}
		in.grad = true
	default:
		return fmt.Errorf("%w: module implements %d, host 1 to %d", ErrABIVersion, int32(v), ABIVersion)
	}
	if err := in.status(ctx, "fedge_setup", uint64(opts.MaxBatch), uint64(opts.InputLen), uint64(opts.Classes)); err != nil {
		return err
	}
	p, err := in.call(ctx, "fedge_meta_ptr")
	if err != nil {
		return err
	}
	n, err := in.call(ctx, "fedge_meta_len")
	if err != nil {
		return err
	}
	if uint32(n) > maxMetadataLen {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrBadMetadata, uint32(n), maxMetadataLen)
	}
	raw, ok := in.mod.Memory().Read(uint32(p), uint32(n))
	if !ok {
		return fmt.Errorf("%w: text outside memory", ErrBadMetadata)
	}
	meta, err := ParseMetadata(raw)
	if err != nil {
		return err
	}
	pc, err := in.call(ctx, "fedge_param_count")
	if err != nil {
		return err
	}
	if int(int32(pc)) != meta.Params {
		return fmt.Errorf("%w: fedge_param_count %d, metadata %d", ErrBadMetadata, int32(pc), meta.Params)
	}
	if meta.MaxBatch != opts.MaxBatch {
		return fmt.Errorf("%w: max_batch %d, requested %d", ErrBadMetadata, meta.MaxBatch, opts.MaxBatch)
	}
	if (opts.InputLen != 0 && meta.InputLen() != opts.InputLen) || (opts.Classes != 0 && meta.Classes != opts.Classes) {
		return fmt.Errorf("%w: model has %d inputs, %d classes; requested %d, %d", ErrBadMetadata,
			meta.InputLen(), meta.Classes, opts.InputLen, opts.Classes)
	}
	in.meta = meta
	// Check every buffer lies inside memory now, so later calls only fail
	// for reasons the model controls.
	np := uint32(meta.Params) * 4
	for name, size := range map[string]uint32{
		"fedge_params": np, "fedge_global": np,
		"fedge_scores": uint32(meta.MaxBatch*meta.Classes) * 4,
	} {
		if _, err := in.buffer(ctx, name, size); err != nil {
			return err
		}
	}
	in.bufs = bufs{}
	return in.loadBufs(ctx, &in.bufs)
}

// Init sets the parameters from the model's seeded initialiser.
func (in *Instance) Init(ctx context.Context, seed uint64) error {
	return in.status(ctx, "fedge_init", seed)
}

// Params returns a copy of the current parameters, in the layout the
// metadata tensors describe.
func (in *Instance) Params(ctx context.Context) ([]float32, error) {
	out := make([]float32, in.meta.Params)
	return out, in.ReadParams(ctx, out)
}

// ReadParams copies the current parameters into dst, which must have
// exactly Metadata().Params elements.
func (in *Instance) ReadParams(ctx context.Context, dst []float32) error {
	if len(dst) != in.meta.Params {
		return fmt.Errorf("read params: %w: %d values, model has %d", ErrShape, len(dst), in.meta.Params)
	}
	b, err := in.buffer(ctx, "fedge_params", uint32(len(dst))*4)
	if err != nil {
		return err
	}
	getF32s(dst, b)
	return nil
}

// SetParams replaces the parameters; p must have exactly Metadata().Params
// finite values.
func (in *Instance) SetParams(ctx context.Context, p []float32) error {
	return in.setVector(ctx, "fedge_params", p)
}

func (in *Instance) setVector(ctx context.Context, name string, p []float32) error {
	if len(p) != in.meta.Params {
		return fmt.Errorf("set %s: %w: %d values, model has %d", name, ErrShape, len(p), in.meta.Params)
	}
	if i := firstNonFinite(p); i >= 0 {
		return fmt.Errorf("set %s: %w at index %d", name, ErrNonFinite, i)
	}
	b, err := in.buffer(ctx, name, uint32(len(p))*4)
	if err != nil {
		return err
	}
	putF32s(b, p)
	return nil
}

func putF32s(dst []byte, src []float32) {
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

func getF32s(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

func firstNonFinite(p []float32) int {
	for i, v := range p {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return i
		}
	}
	return -1
}

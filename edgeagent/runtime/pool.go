package runtime

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Pool lends instances of one module to many users (simulated devices), so
// a fleet of thousands holds at most size instances at once: a device
// borrows an instance, loads its weights (SetParams, or Init), trains, reads
// the weights back (Params) and returns it. Instances are created lazily;
// one returned closed (after a deadline or trap) is dropped and replaced on
// demand. A borrowed instance still holds the previous borrower's weights.
type Pool struct {
	module *Module
	opts   Options
	tokens chan struct{} // one per instance that may be lent out
	mu     sync.Mutex
	idle   []*Instance
	closed bool
}

// ErrPoolClosed is returned by Get after Close.
var ErrPoolClosed = errors.New("instance pool closed")

// NewPool returns a pool of at most size instances created with opts.
func (m *Module) NewPool(opts Options, size int) (*Pool, error) {
	if size < 1 {
		return nil, fmt.Errorf("new pool: size %d: %w", size, ErrShape)
	}
	p := &Pool{module: m, opts: opts, tokens: make(chan struct{}, size)}
	for range size {
		p.tokens <- struct{}{}
	}
	return p, nil
}

// Get returns an idle instance, or creates one, waiting while size
// instances are lent out, until ctx is done.
func (p *Pool) Get(ctx context.Context) (*Instance, error) {
	select {
	case <-p.tokens:
	case <-ctx.Done():
		return nil, fmt.Errorf("pool get: %w", ctx.Err())
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.tokens <- struct{}{}
		return nil, ErrPoolClosed
	}
	if n := len(p.idle); n > 0 {
		in := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return in, nil
	}
	p.mu.Unlock()
	in, err := p.module.Instantiate(ctx, p.opts)
	if err != nil {
		p.tokens <- struct{}{}
		return nil, fmt.Errorf("pool get: %w", err)
	}
	return in, nil
}

// Put returns an instance obtained from Get. Closed instances are dropped.
func (p *Pool) Put(ctx context.Context, in *Instance) {
	p.mu.Lock()
	if in.Closed() || p.closed {
		p.mu.Unlock()
		_ = in.Close(ctx)
	} else {
		p.idle = append(p.idle, in)
		p.mu.Unlock()
	}
	p.tokens <- struct{}{}
}

// Idle returns the number of idle instances.
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// Close closes the idle instances; instances still lent out are closed when
// they are returned.
func (p *Pool) Close(ctx context.Context) error {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	var errs []error
	for _, in := range idle {
		errs = append(errs, in.Close(ctx))
	}
	return errors.Join(errs...)
}

package blob

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/internal/transport"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// ReceiverConfig configures a Receiver. Zero fields take the defaults.
type ReceiverConfig struct {
	// Self is the receiving device's id, which names its request topic for
	// coordinator blobs; empty for the coordinator.
	Self string
	// Window is how many chunks are requested and not yet received at any
	// time (default 8); it bounds the data in flight.
	Window int
	// RetryInterval is how long a requested chunk may stay missing before
	// it is requested again (default 2s).
	RetryInterval time.Duration
	// Limits bound the descriptor and chunks accepted.
	Limits Limits
	// Seal, if set, wraps every request (in a signed envelope, for a
	// Sender whose Open checks it); without it requests go out bare.
	Seal func(req *fedgepb.BlobRequest) ([]byte, error)
}

// ReceiverStats are counters of a Receiver.
type ReceiverStats struct {
	ChunksReceived uint64 // chunks accepted
	BytesReceived  uint64
	Duplicates     uint64 // valid chunks already held
	Rejected       uint64 // chunks failing validation or hash checks
	Requests       uint64 // requests published
	ChunksAsked    uint64 // chunk indices requested, re-requests included
	Retries        uint64 // chunks asked again after RetryInterval
	Completed      uint64 // blobs fetched and verified
}

// Receiver fetches blobs. Progress of an unfinished Fetch is kept, so a
// later Fetch of the same blob continues where it stopped.
type Receiver struct {
	tr  transport.Transport
	cfg ReceiverConfig
	log *zap.Logger

	mu      sync.Mutex
	partial map[ID]*partial

	received, bytes, duplicates, rejected, requests, asked, retries, completed atomic.Uint64
}

// partial is a blob being assembled.
type partial struct {
	desc *fedgepb.BlobDescriptor
	data []byte
	have []bool
	left int  // chunks missing
	busy bool // a Fetch is running
}

// NewReceiver returns a receiver using tr.
func NewReceiver(tr transport.Transport, cfg ReceiverConfig, log *zap.Logger) *Receiver {
	if cfg.Window <= 0 {
		cfg.Window = 8
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 2 * time.Second
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Receiver{tr: tr, cfg: cfg, log: log, partial: make(map[ID]*partial)}
}

// Stats returns a snapshot of the counters.
func (r *Receiver) Stats() ReceiverStats {
	return ReceiverStats{
		ChunksReceived: r.received.Load(), BytesReceived: r.bytes.Load(),
		Duplicates: r.duplicates.Load(), Rejected: r.rejected.Load(),
		Requests: r.requests.Load(), ChunksAsked: r.asked.Load(), Retries: r.retries.Load(),
		Completed: r.completed.Load(),
	}
}

// Progress returns the chunks held and the total of an unfinished blob
// (total 0 while its descriptor is unknown).
func (r *Receiver) Progress(id ID) (held, total int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.partial[id]
	if p == nil || p.desc == nil {
		return 0, 0
	}
	return len(p.have) - p.left, len(p.have)
}

// Forget drops the progress of an unfinished blob.
func (r *Receiver) Forget(id ID) {
	r.mu.Lock()
	delete(r.partial, id)
	r.mu.Unlock()
}

// fetch is the state of one Fetch call.
type fetch struct {
	r      *Receiver
	origin Origin
	id     ID
	p      *partial
	asked  map[uint32]time.Time // outstanding chunk requests
	descAt time.Time            // last descriptor request
}

// Fetch returns the blob id served by origin, verified against id. It
// returns when the blob is complete, ctx is done or the transport closes;
// on failure the chunks received so far are kept for the next Fetch.
func (r *Receiver) Fetch(ctx context.Context, origin Origin, id ID) ([]byte, error) {
	descSub, err := r.tr.Subscribe(ctx, origin.DescriptorTopic(id))
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", id, err)
	}
	defer func() { _ = descSub.Unsubscribe(context.WithoutCancel(ctx)) }()
	chunkSub, err := r.tr.Subscribe(ctx, origin.ChunkTopic(id))
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", id, err)
	}
	defer func() { _ = chunkSub.Unsubscribe(context.WithoutCancel(ctx)) }()

	r.mu.Lock()
	p := r.partial[id]
	if p == nil {
		p = &partial{}
		r.partial[id] = p
	}
	if p.busy {
		r.mu.Unlock()
		return nil, fmt.Errorf("fetch %s: %w", id, ErrBusy)
	}
	p.busy = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		p.busy = false
		r.mu.Unlock()
	}()
	f := &fetch{r: r, origin: origin, id: id, p: p, asked: make(map[uint32]time.Time)}
	tick := time.NewTicker(r.cfg.RetryInterval / 4)
	defer tick.Stop()
	for {
		if p.desc != nil && p.left == 0 {
			return f.finish()
		}
		f.request(ctx)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("fetch %s: %w", id, ctx.Err())
		case m, ok := <-descSub.C():
			if !ok {
				return nil, fmt.Errorf("fetch %s: %w", id, transport.ErrClosed)
			}
			f.onDescriptor(m)
		case m, ok := <-chunkSub.C():
			if !ok {
				return nil, fmt.Errorf("fetch %s: %w", id, transport.ErrClosed)
			}
			f.onChunk(m)
		case now := <-tick.C:
			f.expire(now)
		}
	}
}

// request asks for the descriptor, or for missing chunks up to the window.
func (f *fetch) request(ctx context.Context) {
	r := f.r
	now := time.Now()
	var indices []uint32
	if f.p.desc == nil {
		if now.Sub(f.descAt) < r.cfg.RetryInterval {
			return
		}
		f.descAt = now
	} else {
		for i := 0; i < len(f.p.have) && len(f.asked)+len(indices) < r.cfg.Window; i++ {
			if _, ok := f.asked[uint32(i)]; !f.p.have[i] && !ok {
				indices = append(indices, uint32(i))
			}
		}
		if len(indices) == 0 {
			return
		}
		for _, i := range indices {
			f.asked[i] = now
		}
	}
	req := &fedgepb.BlobRequest{BlobId: f.id[:], Indices: indices}
	var raw []byte
	var err error
	if r.cfg.Seal != nil {
		raw, err = r.cfg.Seal(req)
	} else {
		raw, err = proto.Marshal(req)
	}
	if err != nil {
		r.log.Error("marshal blob request", zap.Error(err))
		return
	}
	r.requests.Add(1)
	r.asked.Add(uint64(len(indices)))
	// While the connection is down a publish waits; the retry timer asks
	// again for whatever this request does not bring.
	pctx, cancel := context.WithTimeout(ctx, r.cfg.RetryInterval)
	defer cancel()
	topic := f.origin.RequestTopic(f.id, r.cfg.Self)
	if err := r.tr.Publish(pctx, topic, raw, transport.PublishOptions{}); err != nil {
		r.log.Info("blob request not sent", zap.Stringer("blob", f.id), zap.Error(err))
	}
}

func (f *fetch) onDescriptor(m transport.Message) {
	r := f.r
	if f.p.desc != nil || len(m.Payload) == 0 {
		return // known already, or a withdrawn (cleared) descriptor
	}
	d, err := DecodeDescriptor(m.Payload, r.cfg.Limits)
	if err == nil && !bytes.Equal(d.BlobId, f.id[:]) {
		err = fmt.Errorf("%w: descriptor of another blob on %s", ErrInvalid, m.Topic)
	}
	if err != nil {
		r.rejected.Add(1)
		r.log.Warn("blob descriptor rejected", zap.Stringer("blob", f.id), zap.Error(err))
		f.descAt = time.Time{}
		return
	}
	n := len(d.ChunkHashes)
	r.mu.Lock()
	f.p.desc, f.p.data, f.p.have, f.p.left = d, make([]byte, d.Length), make([]bool, n), n
	r.mu.Unlock()
}

func (f *fetch) onChunk(m transport.Message) {
	r := f.r
	if f.p.desc == nil {
		return // cannot be checked yet; it will be asked for again
	}
	c, err := DecodeChunk(m.Payload, r.cfg.Limits)
	if err == nil {
		err = CheckChunk(f.p.desc, c)
	}
	if err != nil {
		r.rejected.Add(1)
		r.log.Warn("blob chunk rejected", zap.Stringer("blob", f.id), zap.Error(err))
		if c != nil {
			delete(f.asked, c.Index) // ask again
		}
		return
	}
	i := c.Index
	delete(f.asked, i)
	if f.p.have[i] {
		r.duplicates.Add(1)
		return
	}
	copy(f.p.data[uint64(i)*uint64(f.p.desc.ChunkSize):], c.Data)
	r.mu.Lock()
	f.p.have[i] = true
	f.p.left--
	r.mu.Unlock()
	r.received.Add(1)
	r.bytes.Add(uint64(len(c.Data)))
}

// expire forgets requests older than RetryInterval so they are sent again.
func (f *fetch) expire(now time.Time) {
	for i, at := range f.asked {
		if now.Sub(at) >= f.r.cfg.RetryInterval {
			delete(f.asked, i)
			f.r.retries.Add(1)
		}
	}
}

// finish verifies the whole blob against its id.
func (f *fetch) finish() ([]byte, error) {
	r := f.r
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.partial, f.id)
	if got := Sum(f.p.data); got != f.id {
		r.rejected.Add(1)
		return nil, fmt.Errorf("fetch %s: assembled blob hashes to %s: %w", f.id, got, ErrHashMismatch)
	}
	r.completed.Add(1)
	return f.p.data, nil
}

// Missing lists the chunks of an unfinished blob not yet received (nil
// while its descriptor is unknown).
func (r *Receiver) Missing(id ID) []uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.partial[id]
	if p == nil {
		return nil
	}
	var out []uint32
	for i, ok := range p.have {
		if !ok {
			out = append(out, uint32(i))
		}
	}
	return slices.Clip(out)
}

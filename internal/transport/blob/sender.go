package blob

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/transport"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// SenderConfig configures a Sender. Zero fields take the defaults.
type SenderConfig struct {
	// ChunkSize is the chunk size of offered blobs (default 256 KiB).
	ChunkSize int
	// Workers publish chunks concurrently (default 4).
	Workers int
	// Limits bound incoming requests.
	Limits Limits
	// Open, if set, authenticates a request and names who sent it (a
	// device for coordinator blobs): the coordinator and agents open signed
	// envelopes. Without it requests are bare BlobRequest messages and the
	// requester is the device its topic names.
	Open func(topic string, payload []byte) (req *fedgepb.BlobRequest, requester string, err error)
	// RequesterRate, if positive, bounds the chunk bytes each requester may
	// ask for per second, with a bucket of RequesterBurst bytes (default 4
	// blobs' worth of the largest offered, at least 16 MiB). A request over
	// it is refused and counted; the receiver asks again after its retry
	// interval.
	RequesterRate  float64
	RequesterBurst float64
	// Sent, if set, is told the bytes of every chunk published.
	Sent func(n int)
}

// SenderStats are counters of a Sender.
type SenderStats struct {
	Requests    uint64 // valid requests received
	BadRequests uint64 // requests rejected (malformed, unauthenticated, unknown blob, index out of range)
	RateLimited uint64 // valid requests refused because their requester was over its rate
	ChunksSent  uint64
	BytesSent   uint64 // chunk data bytes
	Coalesced   uint64 // requested chunks already waiting to be sent
	Descriptors uint64 // descriptors published (offers and requests for one)
	PublishErrs uint64
}

// Sender serves blobs of one Origin. Create it with NewSender, offer blobs
// with Offer and answer requests by running Serve.
type Sender struct {
	tr     transport.Transport
	origin Origin
	cfg    SenderConfig
	log    *zap.Logger

	mu      sync.Mutex
	blobs   map[ID]*offered
	queue   []job            // chunks (or descriptors) to publish, FIFO
	pending map[job]struct{} // what queue holds, to coalesce requests
	wake    chan struct{}

	requests, badRequests, rateLimited, chunksSent, bytesSent, coalesced, descriptors, publishErrs atomic.Uint64

	// Requesters' buckets, guarded by mu.
	buckets map[string]*reqBucket
}

type reqBucket struct {
	bytes float64
	last  time.Time
}

type offered struct {
	desc  *fedgepb.BlobDescriptor
	raw   []byte // marshaled descriptor
	data  []byte
	sends []atomic.Uint32 // times each chunk was published
}

// job is one publish: a chunk index, or the descriptor (index -1).
type job struct {
	id    ID
	index int64
}

// NewSender returns a sender publishing through tr.
func NewSender(tr transport.Transport, origin Origin, cfg SenderConfig, log *zap.Logger) *Sender {
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Sender{
		tr: tr, origin: origin, cfg: cfg, log: log,
		blobs:   make(map[ID]*offered),
		pending: make(map[job]struct{}), buckets: map[string]*reqBucket{},
		wake: make(chan struct{}, 1),
	}
}

// Offer keeps payload (not copied: do not modify it) for serving and
// publishes its descriptor, retained. It returns the descriptor.
func (s *Sender) Offer(ctx context.Context, payload []byte) (*fedgepb.BlobDescriptor, error) {
	desc, _, err := Split(payload, s.cfg.ChunkSize)
	if err != nil {
		return nil, fmt.Errorf("offer: %w", err)
	}
	raw, err := proto.Marshal(desc)
	if err != nil {
		return nil, fmt.Errorf("offer: marshal descriptor: %w", err)
	}
	id, _ := idFromBytes(desc.BlobId)
	s.mu.Lock()
	if _, ok := s.blobs[id]; !ok { // offering the same content again keeps its counters
		s.blobs[id] = &offered{desc: desc, raw: raw, data: payload, sends: make([]atomic.Uint32, len(desc.ChunkHashes))}
	}
	s.mu.Unlock()
	if err := s.tr.Publish(ctx, s.origin.DescriptorTopic(id), raw, transport.PublishOptions{Retain: true}); err != nil {
		return nil, fmt.Errorf("offer %s: publish descriptor: %w", id, err)
	}
	s.descriptors.Add(1)
	s.log.Debug("blob offered", zap.Stringer("blob", id), zap.Int("bytes", len(payload)), zap.Int("chunks", len(desc.ChunkHashes)))
	return desc, nil
}

// Withdraw stops serving id and clears its retained descriptor.
func (s *Sender) Withdraw(ctx context.Context, id ID) error {
	s.mu.Lock()
	delete(s.blobs, id)
	s.mu.Unlock()
	if err := s.tr.Publish(ctx, s.origin.DescriptorTopic(id), nil, transport.PublishOptions{Retain: true}); err != nil {
		return fmt.Errorf("withdraw %s: %w", id, err)
	}
	return nil
}

// ChunkSends returns how many times each chunk of id has been published.
func (s *Sender) ChunkSends(id ID) []uint32 {
	s.mu.Lock()
	b := s.blobs[id]
	s.mu.Unlock()
	if b == nil {
		return nil
	}
	out := make([]uint32, len(b.sends))
	for i := range b.sends {
		out[i] = b.sends[i].Load()
	}
	return out
}

// Stats returns a snapshot of the counters.
func (s *Sender) Stats() SenderStats {
	return SenderStats{
		Requests: s.requests.Load(), BadRequests: s.badRequests.Load(), RateLimited: s.rateLimited.Load(),
		ChunksSent: s.chunksSent.Load(), BytesSent: s.bytesSent.Load(),
		Coalesced: s.coalesced.Load(), Descriptors: s.descriptors.Load(),
		PublishErrs: s.publishErrs.Load(),
	}
}

// Serve subscribes to the origin's request topics and answers requests
// until ctx is done or the transport closes. Requests for a chunk already
// waiting to be sent are coalesced; chunks of coordinator blobs go to a
// topic all fetching devices share, so one publish serves them all.
func (s *Sender) Serve(ctx context.Context) error {
	wait, err := s.Start(ctx)
	if err != nil {
		return err
	}
	return wait()
}

// Start is Serve in the background: it returns once subscribed; wait
// returns Serve's result after ctx is done.
func (s *Sender) Start(ctx context.Context) (wait func() error, err error) {
	sub, err := s.tr.Subscribe(ctx, s.origin.RequestFilter())
	if err != nil {
		return nil, fmt.Errorf("serve blobs: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.serve(ctx, sub) }()
	return func() error { return <-done }, nil
}

func (s *Sender) serve(ctx context.Context, sub transport.Subscription) error {
	defer func() { _ = sub.Unsubscribe(context.WithoutCancel(ctx)) }()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range s.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.work(ctx)
		}()
	}
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m, ok := <-sub.C():
			if !ok {
				return fmt.Errorf("serve blobs: %w", transport.ErrClosed)
			}
			if err := s.handleRequest(m); errors.Is(err, ErrRateLimited) {
				s.rateLimited.Add(1)
				s.log.Debug("blob request refused", zap.String("topic", m.Topic), zap.Error(err))
			} else if err != nil {
				s.badRequests.Add(1)
				s.log.Debug("blob request rejected", zap.String("topic", m.Topic), zap.Error(err))
			}
		}
	}
}

// handleRequest validates one request and queues what it asks for.
func (s *Sender) handleRequest(m transport.Message) error {
	topicID, err := requestID(m.Topic)
	if err != nil {
		return err
	}
	var req *fedgepb.BlobRequest
	var requester string
	if s.cfg.Open != nil {
		if req, requester, err = s.cfg.Open(m.Topic, m.Payload); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	} else {
		if req, err = DecodeRequest(m.Payload, s.cfg.Limits); err != nil {
			return err
		}
		if p, perr := topics.Parse(m.Topic); perr == nil {
			requester = p.Device
		}
	}
	id, _ := idFromBytes(req.BlobId)
	if id != topicID {
		return fmt.Errorf("%w: request for %s on the topic of %s", ErrInvalid, id, topicID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.blobs[id]
	if b == nil {
		return fmt.Errorf("request for %s: %w", id, ErrUnknownBlob)
	}
	n := len(b.desc.ChunkHashes)
	for _, i := range req.Indices {
		if int64(i) >= int64(n) {
			return fmt.Errorf("%w: request for chunk %d of %s, which has %d", ErrInvalid, i, id, n)
		}
	}
	if !s.allowLocked(requester, b, len(req.Indices)) {
		return fmt.Errorf("%s asked for %d chunks of %s: %w", requester, len(req.Indices), id, ErrRateLimited)
	}
	s.requests.Add(1)
	if len(req.Indices) == 0 {
		s.enqueueLocked(job{id: id, index: -1})
	}
	for _, i := range req.Indices {
		s.enqueueLocked(job{id: id, index: int64(i)})
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// allowLocked charges a request for n chunks of b (a descriptor request
// costs one chunk's worth) to its requester's bucket.
func (s *Sender) allowLocked(requester string, b *offered, n int) bool {
	if s.cfg.RequesterRate <= 0 {
		return true
	}
	burst := s.cfg.RequesterBurst
	if burst <= 0 {
		burst = max(16<<20, 4*float64(b.desc.Length))
	}
	now := time.Now()
	bk := s.buckets[requester]
	if bk == nil {
		if len(s.buckets) >= maxBuckets {
			for k, v := range s.buckets {
				if now.Sub(v.last) > time.Minute {
					delete(s.buckets, k)
				}
			}
		}
		bk = &reqBucket{bytes: burst, last: now}
		s.buckets[requester] = bk
	}
	bk.bytes = min(burst, bk.bytes+now.Sub(bk.last).Seconds()*s.cfg.RequesterRate)
	bk.last = now
	cost := float64(max(n, 1)) * float64(b.desc.ChunkSize)
	if bk.bytes < cost {
		return false
	}
	bk.bytes -= cost
	return true
}

// maxBuckets is how many requesters' buckets are kept before idle ones are
// forgotten.
const maxBuckets = 1 << 16

func (s *Sender) enqueueLocked(j job) {
	if _, ok := s.pending[j]; ok {
		s.coalesced.Add(1)
		return
	}
	s.pending[j] = struct{}{}
	s.queue = append(s.queue, j)
}

// next takes the next job, or reports false when the queue is empty.
func (s *Sender) next() (job, *offered, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.queue) > 0 {
		j := s.queue[0]
		s.queue[0] = job{}
		s.queue = s.queue[1:]
		delete(s.pending, j)
		if b := s.blobs[j.id]; b != nil {
			if len(s.queue) > 0 {
				select { // let another worker take the rest
				case s.wake <- struct{}{}:
				default:
				}
			}
			return j, b, true
		}
	}
	return job{}, nil, false
}

// work publishes queued jobs until ctx is done.
func (s *Sender) work(ctx context.Context) {
	for {
		j, b, ok := s.next()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
				continue
			}
		}
		if err := s.publish(ctx, j, b); err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, transport.ErrClosed) {
				return
			}
			s.publishErrs.Add(1)
			s.log.Warn("blob publish failed", zap.Stringer("blob", j.id), zap.Int64("chunk", j.index), zap.Error(err))
		}
	}
}

func (s *Sender) publish(ctx context.Context, j job, b *offered) error {
	if j.index < 0 {
		s.descriptors.Add(1)
		return s.tr.Publish(ctx, s.origin.DescriptorTopic(j.id), b.raw, transport.PublishOptions{Retain: true})
	}
	size := int64(b.desc.ChunkSize)
	off := j.index * size
	data := b.data[off:min(off+size, int64(len(b.data)))]
	raw, err := proto.Marshal(&fedgepb.BlobChunk{
		BlobId: b.desc.BlobId, Index: uint32(j.index), ChunkHash: b.desc.ChunkHashes[j.index], Data: data,
	})
	if err != nil {
		return fmt.Errorf("marshal chunk %d: %w", j.index, err)
	}
	b.sends[j.index].Add(1)
	if err := s.tr.Publish(ctx, s.origin.ChunkTopic(j.id), raw, transport.PublishOptions{}); err != nil {
		return err
	}
	s.chunksSent.Add(1)
	s.bytesSent.Add(uint64(len(data)))
	if s.cfg.Sent != nil {
		s.cfg.Sent(len(raw))
	}
	return nil
}

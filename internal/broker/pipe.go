package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// The in-process listener (Config.Pipe) serves clients in the broker's own
// process over in-memory connections (DialPipe): no socket, no file
// descriptor, no port. A fleet simulator connects tens of thousands of
// simulated devices this way, which loopback TCP cannot do within the usual
// limit on open files (two sockets per device). The connections behave like
// TCP ones to mochi and paho: full duplex, buffered (a write returns once
// its bytes are queued for the reader, unless the reader is maxPipeBuffered
// behind), with read and write deadlines, and EOF after the peer closes.
// net.Pipe is not used because its writes wait for the reader: mochi's read
// loop writes acknowledgements inline, so two peers writing to each other
// at once could each wait for the other for ever, which socket buffers
// rule out over TCP.

// maxPipeBuffered is how many bytes a pipe connection queues for its
// reader before writes wait, per direction: enough for a whole packet of
// the largest payload MQTT allows with the broker's defaults, as a TCP
// socket's buffers would absorb it in a few steps. Buffers are allocated
// as data arrives and released when the reader has drained them, so an
// idle connection holds none.
const maxPipeBuffered = 4 << 20

// ErrPipeClosed is returned by DialPipe when the broker has no in-process
// listener or it is closed.
var ErrPipeClosed = errors.New("in-process listener closed or not configured")

// pipeAddr is the address of both ends of a pipe connection.
type pipeAddr string

func (a pipeAddr) Network() string { return "pipe" }
func (a pipeAddr) String() string  { return string(a) }

// pipeListener is a net.Listener whose connections come from dial.
type pipeListener struct {
	conns  chan net.Conn
	done   chan struct{}
	once   sync.Once
	nextID atomic.Uint64
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr("pipe") }

// dial hands the server end of a new connection to Accept and returns the
// client end.
func (l *pipeListener) dial(ctx context.Context) (net.Conn, error) {
	id := l.nextID.Add(1)
	client, server := newPipe(pipeAddr(fmt.Sprintf("pipe-client-%d", id)), pipeAddr("pipe"))
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		return nil, ErrPipeClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// pipeBuf is one direction of a pipe connection: bytes written by one end
// and not yet read by the other.
type pipeBuf struct {
	mu      sync.Mutex
	data    []byte
	off     int           // data[off:] is unread
	wclosed bool          // the writing end closed: EOF once drained
	rclosed bool          // the reading end closed: writes fail
	changed chan struct{} // closed and replaced on every change
}

func newPipeBuf() *pipeBuf { return &pipeBuf{changed: make(chan struct{})} }

// signal wakes every waiter; call with mu held.
func (b *pipeBuf) signal() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// pipeConn is one end of a pipe connection.
type pipeConn struct {
	local, remote net.Addr
	in, out       *pipeBuf // in: read from; out: written to (the peer's in)

	dmu           sync.Mutex
	rdl, wdl      time.Time
	deadlineMoved chan struct{} // closed and replaced when a deadline changes
	closeOnce     sync.Once
}

// newPipe returns the two ends of an in-memory connection.
func newPipe(aAddr, bAddr net.Addr) (*pipeConn, *pipeConn) {
	ab, ba := newPipeBuf(), newPipeBuf()
	a := &pipeConn{local: aAddr, remote: bAddr, in: ba, out: ab, deadlineMoved: make(chan struct{})}
	b := &pipeConn{local: bAddr, remote: aAddr, in: ab, out: ba, deadlineMoved: make(chan struct{})}
	return a, b
}

func (c *pipeConn) LocalAddr() net.Addr  { return c.local }
func (c *pipeConn) RemoteAddr() net.Addr { return c.remote }

// deadlines returns the deadline of reads (or writes) and a channel closed
// when a deadline changes.
func (c *pipeConn) deadline(read bool) (time.Time, <-chan struct{}) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if read {
		return c.rdl, c.deadlineMoved
	}
	return c.wdl, c.deadlineMoved
}

func (c *pipeConn) setDeadline(read, write bool, t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if read {
		c.rdl = t
	}
	if write {
		c.wdl = t
	}
	close(c.deadlineMoved)
	c.deadlineMoved = make(chan struct{})
	return nil
}

func (c *pipeConn) SetDeadline(t time.Time) error      { return c.setDeadline(true, true, t) }
func (c *pipeConn) SetReadDeadline(t time.Time) error  { return c.setDeadline(true, false, t) }
func (c *pipeConn) SetWriteDeadline(t time.Time) error { return c.setDeadline(false, true, t) }

// wait blocks until changed is closed, the deadline moves or passes.
// It returns os.ErrDeadlineExceeded once the deadline has passed.
func (c *pipeConn) wait(read bool, changed <-chan struct{}) error {
	dl, moved := c.deadline(read)
	var timeout <-chan time.Time
	if !dl.IsZero() {
		d := time.Until(dl)
		if d <= 0 {
			return os.ErrDeadlineExceeded
		}
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-changed:
	case <-moved:
	case <-timeout:
	}
	return nil
}

func (c *pipeConn) expired(read bool) bool {
	dl, _ := c.deadline(read)
	return !dl.IsZero() && !time.Now().Before(dl)
}

// Read reads what the peer wrote, waiting for at least one byte.
func (c *pipeConn) Read(p []byte) (int, error) {
	b := c.in
	for {
		b.mu.Lock()
		switch {
		case b.rclosed:
			b.mu.Unlock()
			return 0, net.ErrClosed
		case len(p) == 0:
			b.mu.Unlock()
			return 0, nil
		case b.off < len(b.data):
			n := copy(p, b.data[b.off:])
			b.off += n
			if b.off == len(b.data) {
				b.data, b.off = nil, 0 // drained: release the buffer
			}
			b.signal() // room for a waiting writer
			b.mu.Unlock()
			return n, nil
		case b.wclosed:
			b.mu.Unlock()
			return 0, io.EOF
		}
		changed := b.changed
		b.mu.Unlock()
		if c.expired(true) {
			return 0, os.ErrDeadlineExceeded
		}
		if err := c.wait(true, changed); err != nil {
			return 0, err
		}
	}
}

// Write queues p for the peer, waiting while maxPipeBuffered bytes are
// unread.
func (c *pipeConn) Write(p []byte) (int, error) {
	b := c.out
	n := 0
	for {
		b.mu.Lock()
		switch {
		case b.wclosed:
			b.mu.Unlock()
			return n, net.ErrClosed
		case b.rclosed:
			b.mu.Unlock()
			return n, io.ErrClosedPipe
		}
		if room := maxPipeBuffered - (len(b.data) - b.off); room > 0 {
			k := min(room, len(p)-n)
			if b.off > 0 && b.off >= len(b.data)/2 {
				// Compact instead of growing behind a consumed prefix.
				b.data = append(b.data[:0], b.data[b.off:]...)
				b.off = 0
			}
			b.data = append(b.data, p[n:n+k]...)
			n += k
			b.signal()
		}
		if n == len(p) {
			b.mu.Unlock()
			return n, nil
		}
		changed := b.changed
		b.mu.Unlock()
		if c.expired(false) {
			return n, os.ErrDeadlineExceeded
		}
		if err := c.wait(false, changed); err != nil {
			return n, err
		}
	}
}

// Close closes this end: its reads and writes fail, the peer reads EOF
// after what was already written and its writes fail.
func (c *pipeConn) Close() error {
	c.closeOnce.Do(func() {
		for _, x := range []struct {
			b    *pipeBuf
			read bool
		}{{c.in, true}, {c.out, false}} {
			x.b.mu.Lock()
			if x.read {
				x.b.rclosed = true
				x.b.data, x.b.off = nil, 0
			} else {
				x.b.wclosed = true
			}
			x.b.signal()
			x.b.mu.Unlock()
		}
	})
	return nil
}

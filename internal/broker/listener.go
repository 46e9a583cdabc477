package broker

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
	"go.uber.org/zap"
)

// listener is a mochi listener over TCP or TLS that (unlike mochi's own)
// bounds the time a new connection has to finish its TLS handshake and send
// CONNECT, and on Close closes every connection it accepted, including ones
// still before CONNECT. Both matter for Close: mochi waits for every client
// goroutine, and a half-open connection would otherwise keep it waiting (and
// the port bound) forever.
type listener struct {
	id             string
	addr           string
	tls            *tls.Config
	pipe           *pipeListener // in-process listener (Config.Pipe) instead of TCP
	connectTimeout time.Duration
	log            *zap.Logger
	onErr          func(error) // called with the error that ended a connection
	// closeClients disconnects the mochi clients of this listener. Set by
	// the broker; mochi's own CloseFn (Clients.GetByListener) takes the
	// clients' read lock twice and deadlocks against a concurrent Delete.
	closeClients func(listenerID string)

	ln     net.Listener
	wg     sync.WaitGroup // accept loop and connection goroutines
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]chan struct{} // closed when the connection's goroutine is done
}

var _ listeners.Listener = (*listener)(nil)

func (l *listener) ID() string { return l.id }

func (l *listener) Protocol() string {
	if l.pipe != nil {
		return "pipe"
	}
	if l.tls != nil {
		return "tls"
	}
	return "tcp"
}

func (l *listener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

// Init binds the address.
func (l *listener) Init(*slog.Logger) error {
	if l.pipe != nil {
		l.ln = l.pipe
		l.conns = map[net.Conn]chan struct{}{}
		return nil
	}
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return err
	}
	if l.tls != nil {
		ln = tls.NewListener(ln, l.tls)
	}
	l.ln = ln
	l.conns = map[net.Conn]chan struct{}{}
	return nil
}

// Serve accepts connections until Close.
func (l *listener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.wg.Add(1)
	l.mu.Unlock()
	defer l.wg.Done()
	backoff := 5 * time.Millisecond
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if l.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient failures such as running out of file descriptors.
			l.log.Warn("accept failed", zap.String("listener", l.id), zap.Error(err))
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		if !l.track(c) {
			_ = c.Close()
			return
		}
		_ = c.SetDeadline(time.Now().Add(l.connectTimeout))
		go func() {
			defer l.wg.Done()
			defer l.untrack(c)
			pc, err := checkConnect(c)
			if err == nil {
				err = establish(l.id, pc)
			}
			if err != nil {
				if l.onErr != nil {
					l.onErr(err)
				}
				l.log.Debug("connection ended", zap.String("listener", l.id),
					zap.String("remote", c.RemoteAddr().String()), zap.Error(err))
			}
		}()
	}
}

func (l *listener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

func (l *listener) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.conns[c] = make(chan struct{})
	l.wg.Add(1)
	return true
}

func (l *listener) untrack(c net.Conn) {
	_ = c.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	if done, ok := l.conns[c]; ok {
		close(done)
		delete(l.conns, c)
	}
}

// done returns a channel closed once the goroutine serving c has returned,
// and false if c is not (or no longer) served by this listener.
func (l *listener) done(c net.Conn) (<-chan struct{}, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d, ok := l.conns[c]
	return d, ok
}

// Close stops accepting, lets mochi disconnect its clients, closes any
// connection still open and waits for every goroutine of the listener.
func (l *listener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()
	if l.ln != nil {
		_ = l.ln.Close()
	}
	if l.closeClients != nil {
		l.closeClients(l.id)
	} else {
		closeClients(l.id)
	}
	l.mu.Lock()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

package broker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/fedge-dev/fedge/internal/broker/acltest"
	"github.com/fedge-dev/fedge/internal/topics"
)

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

// TestPipeConnDuplex: both ends write more than a socket buffer to each
// other before either reads (net.Pipe would block both for ever), then a
// write larger than maxPipeBuffered completes as the reader drains it.
func TestPipeConnDuplex(t *testing.T) {
	a, b := newPipe(pipeAddr("a"), pipeAddr("b"))
	defer a.Close()
	defer b.Close()
	if a.LocalAddr().String() != "a" || a.RemoteAddr().String() != "b" || b.RemoteAddr().Network() != "pipe" {
		t.Fatalf("addresses %v %v %v", a.LocalAddr(), a.RemoteAddr(), b.RemoteAddr())
	}
	ab, ba := pattern(1<<20, 1), pattern(1<<20, 2)
	for _, w := range []struct {
		c net.Conn
		p []byte
	}{{a, ab}, {b, ba}} {
		if n, err := w.c.Write(w.p); n != len(w.p) || err != nil {
			t.Fatalf("write %d bytes: %d, %v", len(w.p), n, err)
		}
	}
	for _, r := range []struct {
		c    net.Conn
		want []byte
	}{{b, ab}, {a, ba}} {
		got := make([]byte, len(r.want))
		if _, err := io.ReadFull(r.c, got); err != nil || !bytes.Equal(got, r.want) {
			t.Fatalf("read back: %v (equal %v)", err, bytes.Equal(got, r.want))
		}
	}
	if a.in.data != nil || b.in.data != nil {
		t.Fatal("drained buffers are still held")
	}

	big := pattern(maxPipeBuffered+maxPipeBuffered/2, 3)
	done := make(chan error, 1)
	go func() {
		n, err := a.Write(big)
		if err == nil && n != len(big) {
			err = io.ErrShortWrite
		}
		done <- err
	}()
	got := make([]byte, len(big))
	if _, err := io.ReadFull(b, got); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("read of a write over the buffer: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n, err := a.Read(nil); n != 0 || err != nil {
		t.Fatalf("zero-length read with nothing buffered: %d, %v", n, err)
	}
}

// TestPipeConnDeadlines: expired deadlines fail reads and writes at once,
// and moving a deadline wakes a blocked read or write.
func TestPipeConnDeadlines(t *testing.T) {
	a, b := newPipe(pipeAddr("a"), pipeAddr("b"))
	defer a.Close()
	defer b.Close()
	_ = a.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v", err)
	}
	var nerr net.Error
	if _, err := a.Read(make([]byte, 1)); !errors.As(err, &nerr) || !nerr.Timeout() {
		t.Fatalf("deadline error %v is not a net.Error timeout", err)
	}
	_ = a.SetReadDeadline(time.Time{})

	// A blocked read returns once its deadline is set into the past.
	readErr := make(chan error, 1)
	go func() {
		_, err := a.Read(make([]byte, 1))
		readErr <- err
	}()
	time.Sleep(10 * time.Millisecond) // let it block (either order passes)
	_ = a.SetDeadline(time.Now().Add(-time.Second))
	if err := <-readErr; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("blocked read after SetDeadline: %v", err)
	}

	// A write into a full buffer returns when its deadline passes, having
	// written what fit.
	_ = b.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
	n, err := b.Write(make([]byte, maxPipeBuffered+10))
	if !errors.Is(err, os.ErrDeadlineExceeded) || n != maxPipeBuffered {
		t.Fatalf("write into a full buffer: %d, %v; want %d and a timeout", n, err, maxPipeBuffered)
	}
	_ = a.SetDeadline(time.Time{})
	got := make([]byte, maxPipeBuffered)
	if _, err := io.ReadFull(a, got); err != nil {
		t.Fatal(err)
	}
}

// TestPipeConnClose: the peer reads what was written before Close, then
// EOF; writes to a closed peer and any use of a closed end fail.
func TestPipeConnClose(t *testing.T) {
	a, b := newPipe(pipeAddr("a"), pipeAddr("b"))
	if _, err := a.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	// A blocked read on the closing end is woken too.
	blocked := make(chan error, 1)
	go func() {
		_, err := a.Read(make([]byte, 1))
		blocked <- err
	}()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-blocked; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read blocked during Close: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "last words" {
		t.Fatalf("peer read %q, %v", got, err)
	}
	if _, err := b.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("write to a closed peer: %v", err)
	}
	if _, err := a.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write on a closed end: %v", err)
	}
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on a closed end: %v", err)
	}
}

// pipeOptions returns paho options for user that connect through DialPipe.
func (e *env) pipe(user string) *paho.ClientOptions {
	return paho.NewClientOptions().AddBroker("tcp://in-process").
		SetUsername(user).SetPassword(e.passwords[user]).
		SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
			return e.b.DialPipe(context.Background())
		})
}

// TestPipeListener: clients of the in-process listener are authenticated
// and policed like TCP ones and talk to TCP clients; silent connections
// are closed after ConnectTimeout; Close disconnects them and DialPipe
// then fails.
func TestPipeListener(t *testing.T) {
	e := startEnv(t, false, func(c *Config) {
		c.Pipe = true
		c.ConnectTimeout = 300 * time.Millisecond
	})
	const dev = "dev-a"
	coord := connect(t, e.tcp("coordinator"), "coordinator")
	_, inbox := subscribeInbox(t, coord, topics.DeviceOut(acltest.Fleet, "+", topics.KindUpdate))
	c := connect(t, e.pipe(dev), dev)
	publishOK(t, c, topics.DeviceOut(acltest.Fleet, dev, topics.KindUpdate), []byte("over the pipe"))
	awaitPayload(t, inbox, "over the pipe")
	// Another device's topic is denied as over TCP.
	before := e.b.Stats().PublishDenied
	publishOK(t, c, topics.DeviceOut(acltest.Fleet, "someone-else", topics.KindUpdate), []byte("forged"))
	waitFor(t, "the forged publish to be denied", func() bool { return e.b.Stats().PublishDenied == before+1 })

	bad := e.pipe(dev).SetPassword("wrong").SetClientID("bad")
	if _, err := acltest.TryConnect(bad); err == nil {
		t.Fatal("wrong password accepted over the pipe")
	}

	silent, err := e.b.DialPipe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_ = silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("silent pipe connection: %v, want EOF after ConnectTimeout", err)
	}

	if err := e.b.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pipe client to be disconnected", func() bool { return !c.IsConnectionOpen() })
	if _, err := e.b.DialPipe(context.Background()); !errors.Is(err, ErrPipeClosed) {
		t.Fatalf("DialPipe after Close: %v", err)
	}
}

func TestDialPipeWithoutPipeListener(t *testing.T) {
	e := startEnv(t, false, nil)
	if _, err := e.b.DialPipe(context.Background()); !errors.Is(err, ErrPipeClosed) {
		t.Fatalf("DialPipe without Config.Pipe: %v", err)
	}
	b, err := New(Config{Fleet: "f", Pipe: true, Credentials: NewCredentials()}, nil)
	if err != nil {
		t.Fatalf("a broker with only the in-process listener: %v", err)
	}
	if _, err := b.DialPipe(context.Background()); !errors.Is(err, ErrPipeClosed) {
		t.Fatalf("DialPipe before Start: %v", err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.TCPAddr() != "" || b.TLSAddr() != "" {
		t.Fatalf("pipe-only broker bound %q %q", b.TCPAddr(), b.TLSAddr())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// Accept takes connections at once, so a cancelled dial may still
	// succeed; either way it must return.
	if c, err := b.DialPipe(ctx); err == nil {
		_ = c.Close()
	} else if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled DialPipe: %v", err)
	}
}

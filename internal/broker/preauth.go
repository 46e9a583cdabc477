package broker

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
)

// maxConnectSize bounds the CONNECT packet (client id, credentials and
// will). mochi allocates a packet's full announced length before reading
// it, so without this bound every unauthenticated connection could make
// the broker allocate MaxPayload bytes.
const maxConnectSize = 64 << 10

// errPreAuth marks connections closed before mochi saw them.
var errPreAuth = errors.New("rejected before CONNECT")

// peekedConn is a connection whose first bytes were read ahead to check the
// CONNECT header. It keeps the TLS state visible to the auth hook.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// ConnectionState returns the TLS state of a TLS connection (zero otherwise).
func (c *peekedConn) ConnectionState() tls.ConnectionState {
	if tc, ok := c.Conn.(*tls.Conn); ok {
		return tc.ConnectionState()
	}
	return tls.ConnectionState{}
}

// checkConnect reads ahead the fixed header of the first packet (running the
// TLS handshake on TLS listeners) and rejects anything but a CONNECT of at
// most maxConnectSize bytes. The returned connection replays the bytes read.
func checkConnect(c net.Conn) (net.Conn, error) {
	r := bufio.NewReaderSize(c, 16)
	hdr, err := r.Peek(2)
	if err != nil {
		return nil, fmt.Errorf("%w: read header: %w", errPreAuth, err)
	}
	if hdr[0] != 0x10 { // CONNECT, flags 0
		return nil, fmt.Errorf("%w: first packet type 0x%02x is not CONNECT", errPreAuth, hdr[0])
	}
	length, mult := 0, 1
	for i := 1; i <= 4; i++ {
		b, err := r.Peek(i + 1)
		if err != nil {
			return nil, fmt.Errorf("%w: read length: %w", errPreAuth, err)
		}
		length += int(b[i]&0x7f) * mult
		if b[i]&0x80 == 0 {
			if length > maxConnectSize {
				return nil, fmt.Errorf("%w: CONNECT of %d bytes exceeds %d", errPreAuth, length, maxConnectSize)
			}
			return &peekedConn{Conn: c, r: r}, nil
		}
		mult *= 128
	}
	return nil, fmt.Errorf("%w: malformed remaining length", errPreAuth)
}

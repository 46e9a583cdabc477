package acltest

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"
)

// RawConnect is a CONNECT sent byte by byte, so that tests can send what
// clients like paho never send (an empty password with the password flag)
// and read the exact CONNACK code.
type RawConnect struct {
	Version      byte // 4 (MQTT 3.1.1) or 5
	ClientID     string
	Username     string // sent when non-empty
	Password     string
	PasswordFlag bool // send the password field (even empty)
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// Encode returns the CONNECT packet.
func (c RawConnect) Encode() []byte {
	var body []byte
	body = appendString(body, "MQTT")
	body = append(body, c.Version)
	flags := byte(0x02) // clean session
	if c.Username != "" {
		flags |= 0x80
	}
	if c.PasswordFlag {
		flags |= 0x40
	}
	body = append(body, flags, 0, 30) // keep alive 30 s
	if c.Version == 5 {
		body = append(body, 0) // no properties
	}
	body = appendString(body, c.ClientID)
	if c.Username != "" {
		body = appendString(body, c.Username)
	}
	if c.PasswordFlag {
		body = appendString(body, c.Password)
	}
	pk := []byte{0x10}
	n := len(body)
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		pk = append(pk, d)
		if n == 0 {
			break
		}
	}
	return append(pk, body...)
}

// Do connects to addr (over TLS when tc is non-nil), sends the CONNECT and
// returns the CONNACK's return (3.1.1) or reason (5) code. A connection
// closed without CONNACK is an error.
func (c RawConnect) Do(addr string, tc *tls.Config) (byte, error) {
	conn, err := net.DialTimeout("tcp", addr, Timeout)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if tc != nil {
		if tc.ServerName == "" {
			tc = tc.Clone()
			tc.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tconn := tls.Client(conn, tc)
		if err := tconn.Handshake(); err != nil {
			return 0, fmt.Errorf("tls handshake: %w", err)
		}
		conn = tconn
	}
	_ = conn.SetDeadline(time.Now().Add(Timeout))
	if _, err := conn.Write(c.Encode()); err != nil {
		return 0, err
	}
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(conn, hdr); err != nil {
		return 0, fmt.Errorf("no CONNACK: %w", err)
	}
	if hdr[0] != 0x20 || hdr[1] < 2 || hdr[1] > 127 {
		return 0, fmt.Errorf("not a CONNACK: % x", hdr)
	}
	rest := make([]byte, hdr[1])
	if _, err := io.ReadFull(conn, rest); err != nil {
		return 0, fmt.Errorf("short CONNACK: %w", err)
	}
	return rest[1], nil
}

// CONNACK codes tests compare against (MQTT 3.1.1 return codes and MQTT 5
// reason codes).
const (
	Connack3IdentifierRejected = 0x02
	Connack3BadCredentials     = 0x04
	Connack3NotAuthorized      = 0x05
	Connack5ClientIDNotValid   = 0x85
	Connack5BadCredentials     = 0x86
	Connack5NotAuthorized      = 0x87
)

package broker

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fedge-dev/fedge/internal/broker/acltest"
	"github.com/fedge-dev/fedge/internal/topics"
)

// rawConnect encodes an MQTT 3.1.1 CONNECT for user with password.
func rawConnect(t testing.TB, clientID, user, password string) []byte {
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: clientID,
			UsernameFlag: true, Username: []byte(user), PasswordFlag: true, Password: []byte(password),
		},
	}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func rawPacket(t testing.TB, pk packets.Packet) []byte {
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// assertServing connects as the coordinator with raw bytes and expects a
// successful CONNACK.
func assertServing(t testing.TB, e *env) {
	t.Helper()
	c, err := net.DialTimeout("tcp", e.b.TCPAddr(), 5*time.Second)
	if err != nil {
		t.Fatalf("broker stopped accepting: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(rawConnect(t, "alive-check", "coordinator", e.passwords["coordinator"])); err != nil {
		t.Fatalf("write CONNECT: %v", err)
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil || !bytes.Equal(ack, []byte{0x20, 2, 0, 0}) {
		t.Fatalf("CONNACK % x, %v; broker no longer serves", ack, err)
	}
}

// FuzzRawConnection writes arbitrary bytes to the broker, alone and after a
// valid device CONNECT, and checks that the broker keeps serving. Seeds are
// mochi's table of good and malformed MQTT packets plus fedge-specific
// abuse (foreign topics, wildcard subscriptions, oversized lengths).
func FuzzRawConnection(f *testing.F) {
	e := startEnv(f, false, func(c *Config) { c.MaxPayload = 1024; c.ConnectTimeout = time.Second })
	login := rawConnect(f, "dev-a", "dev-a", e.passwords["dev-a"])
	f.Add([]byte{})
	f.Add(login)
	for _, cases := range packets.TPacketData {
		for _, c := range cases {
			f.Add(c.RawBytes)
			f.Add(append(bytes.Clone(login), c.RawBytes...))
		}
	}
	pub := func(topic string, n int) []byte {
		return rawPacket(f, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
			TopicName: topic, PacketID: 7, Payload: make([]byte, n)})
	}
	sub := func(filter string) []byte {
		return rawPacket(f, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
			PacketID: 9, Filters: packets.Subscriptions{{Filter: filter, Qos: 1}}})
	}
	for _, extra := range [][]byte{
		pub(topics.DeviceOut(acltest.Fleet, "dev-b", topics.KindUpdate), 10),
		pub(topics.Manifest(acltest.Fleet), 10),
		pub(topics.DeviceOut(acltest.Fleet, "dev-a", topics.KindUpdate), 2000),
		sub("#"),
		sub(topics.AllDevicesOut(acltest.Fleet)),
		{0x30, 0xff, 0xff, 0xff, 0x7f},                        // PUBLISH announcing 256 MiB
		{0x30, 0xff, 0xff, 0xff, 0xff, 0x01},                  // malformed remaining length
		rawConnect(f, "dev-a", "dev-a", e.passwords["dev-a"]), // second CONNECT
	} {
		f.Add(append(bytes.Clone(login), extra...))
	}
	f.Add(rawConnect(f, "dev-b", "dev-a", e.passwords["dev-a"]))
	f.Add(rawConnect(f, "dev-a", "dev-a", "wrong"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.DialTimeout("tcp", e.b.TCPAddr(), 5*time.Second)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = c.Write(data)
		_ = c.Close()
		assertServing(t, e)
	})
}

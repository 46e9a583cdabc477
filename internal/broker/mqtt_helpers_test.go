package broker

import (
	"errors"
	"net"
	"net/url"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

type pahoOptions = paho.ClientOptions

func subscribeInbox(t *testing.T, c paho.Client, filter string) (byte, <-chan paho.Message) {
	t.Helper()
	ch := make(chan paho.Message, 64)
	tok := c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) { ch <- m })
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %q: %v", filter, tok.Error())
	}
	return tok.(*paho.SubscribeToken).Result()[filter], ch
}

func publishOK(t *testing.T, c paho.Client, topic string, payload []byte) {
	t.Helper()
	tok := c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %q: %v", topic, tok.Error())
	}
}

// awaitPayload returns the payloads received before want.
func awaitPayload(t *testing.T, ch <-chan paho.Message, want string) []string {
	t.Helper()
	var before []string
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-ch:
			if string(m.Payload()) == want {
				return before
			}
			before = append(before, string(m.Payload()))
		case <-timeout:
			t.Fatalf("%q not received", want)
		}
	}
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// connectKillable connects like connect and also returns a function that
// drops the TCP connection without a DISCONNECT packet.
func connectKillable(t *testing.T, opts *paho.ClientOptions, clientID string) (paho.Client, func()) {
	t.Helper()
	var mu sync.Mutex
	var raw net.Conn
	opts.SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
		c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
		mu.Lock()
		raw = c
		mu.Unlock()
		return c, err
	})
	c := connect(t, opts, clientID)
	return c, func() {
		mu.Lock()
		defer mu.Unlock()
		_ = raw.Close()
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

package mosquittotest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/fedge-dev/fedge/internal/transport"
)

// pahoConn is a minimal transport.Transport over paho, enough to drive the
// shared ACL table against Mosquitto. It is test scaffolding, not the
// production MQTT transport (that lives in internal/transport/mqtt).
type pahoConn struct {
	c mqtt.Client

	mu  sync.Mutex
	raw net.Conn // the network connection, for abrupt disconnects

	// early receives messages that match no subscription of this client:
	// a resumed session's queued messages arrive right after CONNACK,
	// before the test has subscribed again.
	early chan transport.Message
}

type dialOpts struct {
	url, user, clientID, password string
	tls                           *tls.Config
	clean                         bool
	will                          *transport.Will
}

func dialPaho(o dialOpts) (*pahoConn, error) {
	p := &pahoConn{early: make(chan transport.Message, 256)}
	if o.clientID == "" {
		o.clientID = o.user
	}
	opts := mqtt.NewClientOptions().AddBroker(o.url).SetClientID(o.clientID).
		SetUsername(o.user).SetPassword(o.password).SetTLSConfig(o.tls).
		SetCleanSession(o.clean).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).SetOrderMatters(true).SetKeepAlive(30 * time.Second)
	opts.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
		select {
		case p.early <- transport.Message{Topic: m.Topic(), Payload: m.Payload(), Retained: m.Retained()}:
		default:
		}
	})
	if o.will != nil {
		opts.SetBinaryWill(o.will.Topic, o.will.Payload, 1, o.will.Retain)
	}
	opts.SetCustomOpenConnectionFn(func(u *url.URL, co mqtt.ClientOptions) (net.Conn, error) {
		d := &net.Dialer{Timeout: 5 * time.Second}
		var c net.Conn
		var err error
		if u.Scheme == "ssl" {
			c, err = tls.DialWithDialer(d, "tcp", u.Host, co.TLSConfig)
		} else {
			c, err = d.Dial("tcp", u.Host)
		}
		if err == nil {
			p.mu.Lock()
			p.raw = c
			p.mu.Unlock()
		}
		return c, err
	})
	p.c = mqtt.NewClient(opts)
	tok := p.c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("connect %s as %s: %w", o.url, o.user, err)
	}
	return p, nil
}

// kill drops the TCP connection without DISCONNECT, so the broker sends
// the will.
func (p *pahoConn) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.raw != nil {
		_ = p.raw.Close()
	}
}

func wait(ctx context.Context, tok mqtt.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pahoConn) Publish(ctx context.Context, topic string, payload []byte, o transport.PublishOptions) error {
	return wait(ctx, p.c.Publish(topic, 1, o.Retain, payload))
}

type pahoSub struct {
	p       *pahoConn
	filter  string
	mu      sync.Mutex
	ch      chan transport.Message
	closed  bool
	dropped uint64
}

func (s *pahoSub) C() <-chan transport.Message { return s.ch }
func (s *pahoSub) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

func (s *pahoSub) deliver(m transport.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	select {
	case s.ch <- m:
	default:
		s.dropped++
	}
}

func (s *pahoSub) Unsubscribe(ctx context.Context) error {
	err := wait(ctx, s.p.c.Unsubscribe(s.filter))
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.ch)
	}
	s.mu.Unlock()
	return err
}

func (p *pahoConn) Subscribe(ctx context.Context, filter string) (transport.Subscription, error) {
	s := &pahoSub{p: p, filter: filter, ch: make(chan transport.Message, 256)}
	tok := p.c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
		s.deliver(transport.Message{Topic: m.Topic(), Payload: m.Payload(), Retained: m.Retained()})
	})
	if err := wait(ctx, tok); err != nil {
		return nil, err
	}
	if code := tok.(*mqtt.SubscribeToken).Result()[filter]; code >= 0x80 {
		return nil, fmt.Errorf("subscribe %s: SUBACK 0x%02x: %w", filter, code, transport.ErrNotAuthorized)
	}
	return s, nil
}

func (p *pahoConn) Close() error {
	p.c.Disconnect(100)
	return nil
}

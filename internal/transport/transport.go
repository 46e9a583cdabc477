// Package transport moves fedge messages between the coordinator and edge
// devices. Transport is implemented over MQTT 3.1.1 (paho.mqtt.golang, QoS 1,
// persistent sessions) and in memory (same semantics, for tests and large
// simulations); one conformance suite runs against both.
//
// Delivery never calls user code on the transport's own goroutines: incoming
// messages are put into a bounded per-subscription queue that the consumer
// drains from Subscription.C. Publishing from the consumer's goroutine is
// therefore always safe.
package transport

import (
	"context"
	"errors"
)

// Message is one delivered message.
type Message struct {
	Topic    string
	Payload  []byte
	Retained bool // delivered from the broker's retained store
}

// PublishOptions are per-publish settings. Every publish is QoS 1.
type PublishOptions struct {
	// Retain asks the broker to keep the message as the topic's retained
	// message (an empty payload with Retain clears it).
	Retain bool
}

// Subscription is a live subscription. Messages arrive on C in broker order
// until Unsubscribe or the transport's Close, after which C is closed.
type Subscription interface {
	C() <-chan Message
	// Dropped counts messages that arrived while the queue was full. They
	// were acknowledged and discarded: an MQTT 3.1.1 broker resends an
	// unacknowledged message only when the session resumes, and holding it
	// would stop delivery on a live connection once the broker's in-flight
	// window filled. A consumer that must not lose messages drains C at
	// once into queues of its own.
	Dropped() uint64
	Unsubscribe(ctx context.Context) error
}

// Transport is a connected client.
type Transport interface {
	// Publish sends payload at QoS 1 and returns once the broker (or the
	// in-memory bus) has accepted it.
	Publish(ctx context.Context, topic string, payload []byte, opts PublishOptions) error
	// Subscribe registers a topic filter at QoS 1.
	Subscribe(ctx context.Context, filter string) (Subscription, error)
	// Close disconnects cleanly: the last will is not sent.
	Close() error
}

// Will is a last-will message, published by the broker when a client
// disappears without a clean disconnect.
type Will struct {
	Topic   string
	Payload []byte
	Retain  bool
}

// Sentinel errors shared by the implementations.
var (
	// ErrClosed is returned by operations on a closed transport.
	ErrClosed = errors.New("transport closed")
	// ErrNotAuthorized is returned when the broker's ACL denies a publish or
	// subscribe (where the protocol lets the client see it).
	ErrNotAuthorized = errors.New("not authorized")
	// ErrTooLarge is returned for payloads above the configured limit.
	ErrTooLarge = errors.New("payload too large")
)

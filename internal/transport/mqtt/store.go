package mqtt

import (
	"bytes"
	"sync"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// copyStore is paho's in-flight message store, keeping packets in their
// wire form. paho's MemoryStore hands back the very packet it was given, and
// on a reconnect resume() sets the DUP flag on it while the outgoing
// goroutine may be writing it: a data race reported upstream
// (eclipse-paho/paho.mqtt.golang#703). Decoding a fresh copy on every Get
// removes the sharing.
type copyStore struct {
	mu sync.Mutex
	m  map[string][]byte
}

var _ paho.Store = (*copyStore)(nil)

func newCopyStore() *copyStore { return &copyStore{m: make(map[string][]byte)} }

func (s *copyStore) Open() {}

func (s *copyStore) Put(key string, p packets.ControlPacket) {
	var buf bytes.Buffer
	if err := p.Write(&buf); err != nil {
		return // cannot happen for a bytes.Buffer; paho then treats it as not stored
	}
	s.mu.Lock()
	s.m[key] = buf.Bytes()
	s.mu.Unlock()
}

func (s *copyStore) Get(key string) packets.ControlPacket {
	s.mu.Lock()
	b, ok := s.m[key]
	s.mu.Unlock()
	if !ok {
		return nil
	}
	p, err := packets.ReadPacket(bytes.NewReader(b))
	if err != nil {
		return nil
	}
	return p
}

func (s *copyStore) All() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.m))
	for k := range s.m {
		keys = append(keys, k)
	}
	return keys
}

func (s *copyStore) Del(key string) {
	s.mu.Lock()
	delete(s.m, key)
	s.mu.Unlock()
}

func (s *copyStore) Close() {}

func (s *copyStore) Reset() {
	s.mu.Lock()
	clear(s.m)
	s.mu.Unlock()
}

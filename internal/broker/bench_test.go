package broker

import (
	"crypto/pbkdf2"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/fedge-dev/fedge/internal/broker/acltest"
	"github.com/fedge-dev/fedge/internal/topics"
)

// BenchmarkSecretVerify compares the broker's salted SHA-256 check with the
// password KDFs it deliberately does not use: PBKDF2-SHA512 at Mosquitto's
// default 101 iterations and PBKDF2-SHA256 at OWASP's 600,000. The metric is
// verifications per second of one core, i.e. device connects per second
// the credential check allows.
func BenchmarkSecretVerify(b *testing.B) {
	secret, password, err := GenerateSecret()
	if err != nil {
		b.Fatal(err)
	}
	h, err := HashSecret(secret)
	if err != nil {
		b.Fatal(err)
	}
	salt := make([]byte, 16)
	b.Run("salted-sha256", func(b *testing.B) {
		for b.Loop() {
			s, err := DecodeSecret(password)
			if err != nil || !h.Verify(s) {
				b.Fatal("verify failed")
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifies/s")
	})
	for _, kdf := range []struct {
		name string
		run  func() error
	}{
		{"pbkdf2-sha512-101", func() error { _, err := pbkdf2.Key(sha512.New, password, salt, 101, 64); return err }},
		{"pbkdf2-sha256-600000", func() error { _, err := pbkdf2.Key(sha256.New, password, salt, 600000, 32); return err }},
	} {
		b.Run(kdf.name, func(b *testing.B) {
			for b.Loop() {
				if err := kdf.run(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifies/s")
		})
	}
}

// BenchmarkPublishQoS1 measures QoS 1 messages from a device through the
// broker (auth, ACL and size checks on every publish and delivery) to a
// subscribed coordinator over loopback, for several payload sizes. The
// baseline is the same client publishing to a topic nobody subscribes to,
// which costs the client, the network and the broker's inbound path but no
// delivery.
func BenchmarkPublishQoS1(b *testing.B) {
	for _, size := range []int{256, 16 << 10, 256 << 10} {
		for _, mode := range []string{"delivered", "baseline-no-subscriber", "delivered-no-rate-limit"} {
			b.Run(fmt.Sprintf("%s/%dB", mode, size), func(b *testing.B) {
				// The device's publish rate limit is set too high to drop
				// anything, so its cost is measured; the last mode turns it
				// off for the baseline.
				rate := 1e12
				if mode == "delivered-no-rate-limit" {
					rate = -1
				}
				benchPublish(b, size, mode != "baseline-no-subscriber", rate)
			})
		}
	}
}

func benchPublish(b *testing.B, size int, subscribe bool, rate float64) {
	creds := NewCredentials()
	passwords := map[string]string{}
	for _, u := range acltest.Users() {
		secret, pw, err := GenerateSecret()
		if err != nil {
			b.Fatal(err)
		}
		if err := creds.Add(u.Name, secret, u.Identity); err != nil {
			b.Fatal(err)
		}
		passwords[u.Name] = pw
	}
	br, err := New(Config{Fleet: acltest.Fleet, TCPAddr: "127.0.0.1:0", Credentials: creds,
		DevicePublishRate: rate, DevicePublishBurst: 1 << 30}, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := br.Start(); err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	opts := func(user string) *paho.ClientOptions {
		return paho.NewClientOptions().AddBroker("tcp://" + br.TCPAddr()).SetUsername(user).SetPassword(passwords[user]).SetClientID(user)
	}
	var got atomic.Int64
	if subscribe {
		coord, err := acltest.TryConnect(opts("coordinator"))
		if err != nil {
			b.Fatal(err)
		}
		defer coord.Disconnect(0)
		tok := coord.Subscribe(topics.AllDevicesOut(acltest.Fleet), 1, func(paho.Client, paho.Message) { got.Add(1) })
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			b.Fatal("subscribe failed")
		}
	}
	dev, err := acltest.TryConnect(opts("dev-a"))
	if err != nil {
		b.Fatal(err)
	}
	defer dev.Disconnect(0)
	topic := topics.DeviceOut(acltest.Fleet, "dev-a", topics.KindUpdate)
	if !subscribe {
		topic = topics.DeviceOut(acltest.Fleet, "dev-a", "unwatched")
	}
	payload := make([]byte, size)
	b.SetBytes(int64(size))
	b.ResetTimer()
	toks := make([]paho.Token, 0, 256)
	for i := 0; i < b.N; i++ {
		toks = append(toks, dev.Publish(topic, 1, false, payload))
		if len(toks) == cap(toks) || i == b.N-1 {
			for _, tok := range toks {
				if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
					b.Fatalf("publish: %v", tok.Error())
				}
			}
			toks = toks[:0]
		}
	}
	if subscribe {
		deadline := time.Now().Add(30 * time.Second)
		for got.Load() < int64(b.N) {
			if time.Now().After(deadline) {
				b.Fatalf("delivered %d of %d (stats %+v)", got.Load(), b.N, br.Stats())
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

package broker

import (
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/fedge-dev/fedge/internal/broker/acltest"
	"github.com/fedge-dev/fedge/internal/topics"
)

// TestRapidTakeOverKeepsNewConnection connects the same device again while
// its previous connection is still open, many times. Each new connection
// must receive what is sent to it afterwards: mochi's own take-over races
// with the old connection's clean-up and could drop the new client.
func TestRapidTakeOverKeepsNewConnection(t *testing.T) {
	e := startEnv(t, false, nil)
	coord := connect(t, e.tcp("coordinator"), "coord")
	task := topics.DeviceIn(acltest.Fleet, "dev-a", topics.KindTask)
	rounds := 40
	if testing.Short() {
		rounds = 10
	}
	var prev paho.Client
	for i := 0; i < rounds; i++ {
		in := make(chan paho.Message, 8)
		c, err := acltest.TryConnect(e.tcp("dev-a").SetClientID("dev-a").
			SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { in <- m }))
		if err != nil {
			t.Fatalf("round %d: connect: %v", i, err)
		}
		if tok := c.Subscribe(topics.DeviceInAll(acltest.Fleet, "dev-a"), 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("round %d: subscribe: %v", i, tok.Error())
		}
		want := fmt.Sprintf("task-%d", i)
		publishOK(t, coord, task, []byte(want))
		select {
		case m := <-in:
			if string(m.Payload()) != want {
				t.Fatalf("round %d: got %q", i, m.Payload())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: new connection did not receive its task (stats %+v)", i, e.b.Stats())
		}
		if prev != nil {
			prev.Disconnect(0)
		}
		prev = c
	}
	prev.Disconnect(0)
}

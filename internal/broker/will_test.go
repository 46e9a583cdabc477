package broker

import (
	"strings"
	"testing"

	"github.com/fedge-dev/fedge/internal/broker/acltest"
	"github.com/fedge-dev/fedge/internal/topics"
)

func TestWillOnAbruptDisconnect(t *testing.T) {
	e := startEnv(t, false, nil)
	obs := connect(t, e.tcp("coordinator"), "obs")
	_, in := subscribeInbox(t, obs, topics.AllDevicesOut(acltest.Fleet))
	status := topics.DeviceOut(acltest.Fleet, "dev-a", topics.KindStatus)

	// A clean disconnect sends no will; an abrupt one does.
	c := connect(t, e.tcp("dev-a").SetWill(status, "offline-clean", 1, false), "dev-a")
	c.Disconnect(100)
	// Wait for the DISCONNECT: a new connection taking over first would
	// (rightly) make the broker send the old connection's will.
	waitFor(t, "clean disconnect", func() bool { return e.b.Stats().Connected == 1 })
	// Devices may not retain their status, so a retained will is refused
	// at CONNECT as not authorized.
	if c, err := acltest.TryConnect(e.tcp("dev-a").SetWill(status, "offline", 1, true).SetClientID("dev-a")); err == nil || !strings.Contains(err.Error(), "not Authorized") {
		if c != nil {
			c.Disconnect(0)
		}
		t.Fatalf("connect with a retained will: %v, want not authorized", err)
	}
	_, kill := connectKillable(t, e.tcp("dev-a").SetWill(status, "offline", 1, false), "dev-a")
	kill()
	if got := awaitPayload(t, in, "offline"); contains(got, "offline-clean") {
		t.Fatalf("will of a cleanly disconnected client was sent: %q", got)
	}

	// After revocation the will is dropped and counted.
	_, kill = connectKillable(t, e.tcp("dev-b").SetWill(topics.DeviceOut(acltest.Fleet, "dev-b", topics.KindStatus), "b-offline", 1, false), "dev-b")
	e.cfg.Credentials.Remove("dev-b")
	before := e.b.Stats().WillDenied
	kill()
	waitFor(t, "revoked will to be dropped", func() bool { return e.b.Stats().WillDenied == before+1 })
	publishOK(t, obs, topics.DeviceOut(acltest.Fleet, "dev-a", topics.KindStatus), []byte("marker"))
	if got := awaitPayload(t, in, "marker"); contains(got, "b-offline") || contains(got, "offline-clean") {
		t.Fatalf("revoked device's will delivered: %q", got)
	}
}

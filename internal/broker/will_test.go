package broker

import (
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
	_, kill := connectKillable(t, e.tcp("dev-a").SetWill(status, "offline", 1, true), "dev-a")
	kill()
	if got := awaitPayload(t, in, "offline"); contains(got, "offline-clean") {
		t.Fatalf("will of a cleanly disconnected client was sent: %q", got)
	}
	// The will was retained: a late subscriber gets it.
	late := connect(t, e.tcp("coordinator"), "late")
	_, lateIn := subscribeInbox(t, late, status)
	if m := <-lateIn; string(m.Payload()) != "offline" || !m.Retained() {
		t.Fatalf("late subscriber got %q retained=%v", m.Payload(), m.Retained())
	}

	// After revocation the will is dropped and counted.
	_, kill = connectKillable(t, e.tcp("dev-b").SetWill(topics.DeviceOut(acltest.Fleet, "dev-b", topics.KindStatus), "b-offline", 1, false), "dev-b")
	e.cfg.Credentials.Remove("dev-b")
	before := e.b.Stats().WillDenied
	kill()
	waitFor(t, "revoked will to be dropped", func() bool { return e.b.Stats().WillDenied == before+1 })
	publishOK(t, obs, topics.DeviceOut(acltest.Fleet, "dev-a", topics.KindStatus), []byte("marker"))
	// (mochi may deliver dev-a's retained will to obs a second time: QoS 1
	// is at least once.)
	if got := awaitPayload(t, in, "marker"); contains(got, "b-offline") || contains(got, "offline-clean") {
		t.Fatalf("revoked device's will delivered: %q", got)
	}
}

// Package acltest is the shared allow/deny table of fedge's broker access
// policy (topics.Allowed): Cases, WillCases and the Users they act as. The
// embedded broker and a real Mosquitto with the generated ACL file are
// checked against it end to end by RunMQTT (paho clients); the transport
// conformance suite runs the same table through any transport.Transport,
// including the in-memory one. All must give the same answers.
//
// What "denied" means differs in detail between brokers, so the checks
// look at what matters, the data flow:
//   - a denied publish may be refused with an error or silently dropped, but
//     no subscriber may receive it;
//   - a denied subscribe may get a failure SUBACK (embedded broker) or be
//     granted and filtered at delivery (Mosquitto's acl_file checks reads per
//     message), but the Probe topic it matches must never be delivered;
//   - a client of a fleet the broker does not serve may be refused at
//     CONNECT, which denies everything it would do.
package acltest

import (
	"github.com/fedge-dev/fedge/internal/topics"
)

// Fleets used by the table.
const (
	Fleet      = "fleet1"
	OtherFleet = "fleet2"
)

// User is a broker account of the table.
type User struct {
	Name     string
	Identity topics.Identity
}

// Users returns the accounts the table refers to. Observer and Observer2
// are coordinators used by the runner to watch and probe fleet1 and fleet2;
// cases never act as them. Device user names equal their device ids.
func Users() []User {
	return []User{
		{"coordinator", topics.Identity{Role: topics.RoleCoordinator, ID: "coordinator", Fleet: Fleet}},
		{"observer", topics.Identity{Role: topics.RoleCoordinator, ID: "observer", Fleet: Fleet}},
		{"dev-a", topics.Identity{Role: topics.RoleDevice, ID: "dev-a", Fleet: Fleet}},
		{"dev-b", topics.Identity{Role: topics.RoleDevice, ID: "dev-b", Fleet: Fleet}},
		{"coord-2", topics.Identity{Role: topics.RoleCoordinator, ID: "coord-2", Fleet: OtherFleet}},
		{"observer-2", topics.Identity{Role: topics.RoleCoordinator, ID: "observer-2", Fleet: OtherFleet}},
		{"dev-x", topics.Identity{Role: topics.RoleDevice, ID: "dev-x", Fleet: OtherFleet}},
	}
}

// Observer returns the watcher/prober account of a fleet.
func Observer(fleet string) string {
	if fleet == OtherFleet {
		return "observer-2"
	}
	return "observer"
}

// Identity returns the identity of a table user (zero if unknown).
func Identity(user string) topics.Identity {
	for _, u := range Users() {
		if u.Name == user {
			return u.Identity
		}
	}
	return topics.Identity{}
}

// Case is one access check.
type Case struct {
	Name   string
	User   string // who acts
	Action topics.Action
	// Topic is the topic name published to, or the filter subscribed to.
	Topic string
	// Probe (subscribe cases) is a concrete topic matched by Topic. For an
	// allowed case User may read it; for a denied case User may not, so it
	// must never reach User. ProbeFleet is the fleet whose observer publishes
	// it.
	Probe      string
	ProbeFleet string
	Allowed    bool
}

// Cases returns the table. Every entry agrees with topics.Allowed (a unit
// test checks that), so the table documents the policy as much as it tests
// brokers.
func Cases() []Case {
	f, g := Fleet, OtherFleet
	pub := func(name, user, topic string, ok bool) Case {
		return Case{Name: name, User: user, Action: topics.Publish, Topic: topic, Allowed: ok}
	}
	sub := func(name, user, filter, probe, probeFleet string, ok bool) Case {
		return Case{Name: name, User: user, Action: topics.Subscribe, Topic: filter, Probe: probe, ProbeFleet: probeFleet, Allowed: ok}
	}
	return []Case{
		// Device publishing.
		pub("device publishes its update", "dev-a", topics.DeviceOut(f, "dev-a", topics.KindUpdate), true),
		pub("device publishes its status", "dev-a", topics.DeviceOut(f, "dev-a", topics.KindStatus), true),
		pub("device publishes a blob chunk", "dev-a", topics.DeviceOut(f, "dev-a", topics.KindBlob)+"/h1/0", true),
		pub("device publishes under another device id", "dev-a", topics.DeviceOut(f, "dev-b", topics.KindUpdate), false),
		pub("device publishes into its own inbox", "dev-a", topics.DeviceIn(f, "dev-a", topics.KindTask), false),
		pub("device publishes into another inbox", "dev-a", topics.DeviceIn(f, "dev-b", topics.KindTask), false),
		pub("device publishes the global manifest", "dev-a", topics.Manifest(f), false),
		pub("device publishes the round", "dev-a", topics.Round(f), false),
		pub("device publishes a global blob", "dev-a", topics.GlobalBlob(f, "h1")+"/0", false),
		pub("device publishes to its bare out topic", "dev-a", topics.FleetRoot(f)+"/dev/dev-a/out", false),
		pub("device publishes under a prefix-sharing id", "dev-a", topics.DeviceOut(f, "dev-ab", topics.KindUpdate), false),
		pub("device publishes into another fleet", "dev-a", topics.DeviceOut(g, "dev-a", topics.KindUpdate), false),
		// Coordinator publishing.
		pub("coordinator publishes the manifest", "coordinator", topics.Manifest(f), true),
		pub("coordinator publishes a task", "coordinator", topics.DeviceIn(f, "dev-a", topics.KindTask), true),
		pub("coordinator publishes a global blob", "coordinator", topics.GlobalBlob(f, "h1")+"/0", true),
		pub("coordinator publishes into another fleet", "coordinator", topics.Manifest(g), false),
		pub("other fleet's coordinator publishes here", "coord-2", topics.DeviceIn(f, "dev-a", topics.KindTask), false),

		// Device subscribing.
		sub("device reads its inbox", "dev-a", topics.DeviceInAll(f, "dev-a"), topics.DeviceIn(f, "dev-a", topics.KindTask), f, true),
		sub("device reads one inbox kind", "dev-a", topics.DeviceIn(f, "dev-a", topics.KindAck), topics.DeviceIn(f, "dev-a", topics.KindAck), f, true),
		sub("device reads global topics", "dev-a", topics.GlobalAll(f), topics.Manifest(f), f, true),
		sub("device reads the round", "dev-a", topics.Round(f), topics.Round(f), f, true),
		sub("device reads another device's updates", "dev-a", topics.DeviceOut(f, "dev-b", topics.KindUpdate), topics.DeviceOut(f, "dev-b", topics.KindUpdate), f, false),
		sub("device reads all devices' output", "dev-a", topics.AllDevicesOut(f), topics.DeviceOut(f, "dev-b", topics.KindUpdate), f, false),
		sub("device reads another inbox", "dev-a", topics.DeviceInAll(f, "dev-b"), topics.DeviceIn(f, "dev-b", topics.KindTask), f, false),
		sub("device reads its own output", "dev-a", topics.DeviceOut(f, "dev-a", topics.KindUpdate), topics.DeviceOut(f, "dev-a", topics.KindUpdate), f, false),
		sub("device reads the whole fleet", "dev-a", topics.FleetRoot(f)+"/#", topics.DeviceOut(f, "dev-b", topics.KindStatus), f, false),
		sub("device reads every inbox", "dev-a", topics.FleetRoot(f)+"/dev/+/in/#", topics.DeviceIn(f, "dev-b", topics.KindTask), f, false),
		sub("device reads another fleet's globals", "dev-a", topics.GlobalAll(g), topics.Manifest(g), g, false),
		sub("device reads everything", "dev-a", "#", topics.DeviceOut(f, "dev-b", topics.KindUpdate), f, false),
		// Coordinator subscribing.
		sub("coordinator reads all device output", "coordinator", topics.AllDevicesOut(f), topics.DeviceOut(f, "dev-b", topics.KindUpdate), f, true),
		sub("coordinator reads the whole fleet", "coordinator", topics.FleetRoot(f)+"/#", topics.DeviceIn(f, "dev-a", topics.KindTask), f, true),
		sub("coordinator reads another fleet", "coordinator", topics.FleetRoot(g)+"/#", topics.DeviceOut(g, "dev-x", topics.KindUpdate), g, false),
		sub("coordinator reads everything", "coordinator", "#", topics.DeviceOut(g, "dev-x", topics.KindUpdate), g, false),
	}
}

// WillCase is a last-will check: User connects with a will on Topic and
// disconnects abruptly; the will must reach the fleet's observer exactly
// when Allowed. A broker may instead refuse the connection of a client whose
// will it would not publish.
type WillCase struct {
	Name    string
	User    string
	Topic   string
	Allowed bool
}

// WillCases returns the last-will table.
func WillCases() []WillCase {
	f := Fleet
	return []WillCase{
		{"device will on its own status", "dev-a", topics.DeviceOut(f, "dev-a", topics.KindStatus), true},
		{"device will on another device's status", "dev-a", topics.DeviceOut(f, "dev-b", topics.KindStatus), false},
		{"device will on the global manifest", "dev-a", topics.Manifest(f), false},
		{"device will on its own inbox", "dev-a", topics.DeviceIn(f, "dev-a", topics.KindTask), false},
	}
}

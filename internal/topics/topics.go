// Package topics is the one place where fedge's MQTT topic scheme and its
// access policy are defined. Every topic a component publishes or subscribes
// to is built here; the embedded broker, the in-memory transport and the
// generated Mosquitto ACL file all enforce the same Allowed policy.
//
// The scheme (all under the versioned root "fedge/v1/{fleet}"):
//
//	fedge/v1/{fleet}/global/manifest          coordinator -> all   retained: current signed model manifest
//	fedge/v1/{fleet}/global/round             coordinator -> all   retained: current round announcement
//	fedge/v1/{fleet}/global/blob/{id}/...     coordinator -> all   chunks of coordinator blobs (models)
//	fedge/v1/{fleet}/dev/{device}/in/{kind}   coordinator -> device  tasks, acks, blob requests, secagg
//	fedge/v1/{fleet}/dev/{device}/out/{kind}  device -> coordinator  hello/status, updates, blob chunks, secagg
//	fedge/v1/{fleet}/dev/{device}/out/status  device's presence; also its last will (offline)
//	fedge/v1/{fleet}/svc/probe                coordinator -> itself  liveness probe through the broker
//
// A device may publish only under its own dev/{device}/out/ and may read only
// its own dev/{device}/in/ and the fleet's global/ topics. The coordinator
// (and any other admin identity) may do anything under its fleet.
package topics

import (
	"errors"
	"fmt"
	"strings"
)

// Version is the protocol version segment of every topic.
const Version = "v1"

// Root is the first topic segment of every fedge topic.
const Root = "fedge"

// Message kinds used as the last segment of dev/{device}/in|out topics.
const (
	KindStatus  = "status"  // out: hello, status, last will
	KindUpdate  = "update"  // out: model updates
	KindTask    = "task"    // in: round tasks
	KindAck     = "ack"     // in: acknowledgements of updates
	KindSecAgg  = "secagg"  // in and out: secure aggregation stages
	KindBlob    = "blob"    // in and out: blob chunks and chunk requests (followed by more segments)
	KindEnroll  = "enroll"  // out: enrollment request
	KindControl = "control" // in: coordinator control messages
)

// Role is who a broker identity is.
type Role int

const (
	// RoleDevice is an enrolled edge device; its ID is the device id.
	RoleDevice Role = iota + 1
	// RoleCoordinator is the fleet's coordinator (or an admin tool).
	RoleCoordinator
)

// Identity is an authenticated broker client.
type Identity struct {
	Role  Role
	ID    string // device id for RoleDevice
	Fleet string
}

// Action is what a client wants to do with a topic.
type Action int

const (
	// Publish to a topic name.
	Publish Action = iota + 1
	// Subscribe to a topic filter (may contain + and #).
	Subscribe
)

// ErrInvalidID is returned for fleet or device ids that cannot be used in topics.
var ErrInvalidID = errors.New("invalid id")

// ValidateID checks that a fleet or device id is usable as one topic segment:
// 1 to 64 characters of [A-Za-z0-9._-], not "." or "..".
func ValidateID(id string) error {
	if id == "" || len(id) > 64 || id == "." || id == ".." {
		return fmt.Errorf("%w: %q must be 1 to 64 characters", ErrInvalidID, id)
	}
	for _, c := range id {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return fmt.Errorf("%w: %q contains %q (allowed: letters, digits, '.', '_', '-')", ErrInvalidID, id, c)
		}
	}
	return nil
}

// FleetRoot returns "fedge/v1/{fleet}".
func FleetRoot(fleet string) string { return Root + "/" + Version + "/" + fleet }

// Manifest is the retained topic of the current signed global model manifest.
func Manifest(fleet string) string { return FleetRoot(fleet) + "/global/manifest" }

// Round is the retained topic of the current round announcement.
func Round(fleet string) string { return FleetRoot(fleet) + "/global/round" }

// GlobalBlob is the topic prefix of coordinator blob chunks: ".../global/blob/{id}".
func GlobalBlob(fleet, id string) string { return FleetRoot(fleet) + "/global/blob/" + id }

// GlobalAll is the filter a device subscribes to for everything fleet-wide.
func GlobalAll(fleet string) string { return FleetRoot(fleet) + "/global/#" }

// DeviceIn is the coordinator-to-device topic of one message kind.
func DeviceIn(fleet, device, kind string) string {
	return FleetRoot(fleet) + "/dev/" + device + "/in/" + kind
}

// DeviceOut is the device-to-coordinator topic of one message kind.
func DeviceOut(fleet, device, kind string) string {
	return FleetRoot(fleet) + "/dev/" + device + "/out/" + kind
}

// DeviceInAll is the filter a device subscribes to for its own inbox.
func DeviceInAll(fleet, device string) string { return FleetRoot(fleet) + "/dev/" + device + "/in/#" }

// Probe is the topic the coordinator publishes to itself through the
// broker to prove it still hears it ("fedge/v1/{fleet}/svc/probe"). Only a
// coordinator identity may use svc/ topics.
func Probe(fleet string) string { return FleetRoot(fleet) + "/svc/probe" }

// AllDevicesOut is the filter the coordinator subscribes to for everything
// devices send: "fedge/v1/{fleet}/dev/+/out/#".
func AllDevicesOut(fleet string) string { return FleetRoot(fleet) + "/dev/+/out/#" }

// Parsed is a topic broken into its fedge parts.
type Parsed struct {
	Fleet     string
	Device    string   // set for dev/{device}/... topics
	Direction string   // "in" or "out" for device topics, "global" for global topics, "svc" for the coordinator's own
	Kind      string   // first segment after in/out/global
	Rest      []string // segments after Kind
}

// ErrNotFedge is returned by Parse for topics outside the scheme.
var ErrNotFedge = errors.New("not a fedge topic")

// Parse splits a concrete topic name (no wildcards) into its parts.
func Parse(topic string) (Parsed, error) {
	seg := strings.Split(topic, "/")
	if len(seg) < 5 || seg[0] != Root || seg[1] != Version {
		return Parsed{}, fmt.Errorf("%w: %q", ErrNotFedge, topic)
	}
	for _, s := range seg {
		if s == "+" || s == "#" || s == "" {
			return Parsed{}, fmt.Errorf("%w: %q has an empty or wildcard segment", ErrNotFedge, topic)
		}
	}
	p := Parsed{Fleet: seg[2]}
	switch seg[3] {
	case "global":
		p.Direction = "global"
		p.Kind = seg[4]
		p.Rest = seg[5:]
	case "svc":
		p.Direction = "svc"
		p.Kind = seg[4]
		p.Rest = seg[5:]
	case "dev":
		if len(seg) < 7 || (seg[5] != "in" && seg[5] != "out") {
			return Parsed{}, fmt.Errorf("%w: %q", ErrNotFedge, topic)
		}
		p.Device, p.Direction, p.Kind, p.Rest = seg[4], seg[5], seg[6], seg[7:]
	default:
		return Parsed{}, fmt.Errorf("%w: %q", ErrNotFedge, topic)
	}
	return p, nil
}

// Allowed is the default-deny access policy of the fleet's broker. topic is a
// topic name for Publish and a topic filter (wildcards allowed) for
// Subscribe.
func Allowed(id Identity, act Action, topic string) bool {
	if id.Fleet == "" || ValidateID(id.Fleet) != nil {
		return false
	}
	root := FleetRoot(id.Fleet) + "/"
	if !strings.HasPrefix(topic, root) {
		return false
	}
	switch id.Role {
	case RoleCoordinator:
		return true
	case RoleDevice:
		if ValidateID(id.ID) != nil {
			return false
		}
		own := root + "dev/" + id.ID + "/"
		switch act {
		case Publish:
			if strings.ContainsAny(topic, "+#") {
				return false
			}
			return strings.HasPrefix(topic, own+"out/") && len(topic) > len(own+"out/")
		case Subscribe:
			return filterWithin(topic, own+"in/") || filterWithin(topic, root+"global/")
		}
	}
	return false
}

// filterWithin reports whether every topic matched by filter lies under
// prefix (which ends in "/"). Wildcards are allowed only after the prefix.
func filterWithin(filter, prefix string) bool {
	if filter == strings.TrimSuffix(prefix, "/")+"/#" {
		return true
	}
	if !strings.HasPrefix(filter, prefix) {
		return false
	}
	return len(filter) > len(prefix)
}

package topics

import (
	"errors"
	"fmt"
	"strings"
)

// CoordinatorUser is the broker user name of a fleet's coordinator, on the
// embedded broker and in generated Mosquitto configurations.
const CoordinatorUser = "coordinator"

// CoordinatorClientID is the MQTT client id the coordinator of fleet
// connects with.
func CoordinatorClientID(fleet string) string { return CoordinatorUser + "-" + fleet }

// serviceNames are the names (user names, and prefixes of client ids) of
// the fleet's service identities. No device id may equal one, start with
// one or be a prefix of one, in any letter case: otherwise a device could
// share a user name or client id with a service on a broker that maps user
// names to client ids (Mosquitto's use_username_as_clientid), take over the
// coordinator's session, or match an ACL or prefix rule meant for it.
var serviceNames = []string{CoordinatorUser}

// ErrReservedID is returned (wrapped together with ErrInvalidID) for device
// ids that collide with a service identity.
var ErrReservedID = errors.New("reserved id")

// ValidateDeviceID is ValidateID for device ids, which in addition may not
// collide with a service identity (the coordinator's user name or client
// id): "coordinator", "coordinator-default", "Coordinator2" and "coord" are
// all refused.
func ValidateDeviceID(id string) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	low := strings.ToLower(id)
	for _, s := range serviceNames {
		if strings.HasPrefix(low, s) || strings.HasPrefix(s, low) {
			return fmt.Errorf("%w: %w: device id %q collides with the service identity %q (device ids may not start with it or be a prefix of it)",
				ErrInvalidID, ErrReservedID, id, s)
		}
	}
	return nil
}

// RetainAllowed reports whether id may publish a retained message on topic
// (a topic name Allowed lets it publish to). The coordinator may retain
// anything in its fleet. A device may retain only the descriptor of its own
// blobs, dev/{device}/out/blob/{id}/desc, where {id} is a 64-character
// lowercase hex SHA-256: the blob protocol needs it retained so that the
// coordinator finds the descriptor of an update whenever it subscribes.
// Everything else a device sends is live traffic that no broker should keep.
func RetainAllowed(id Identity, topic string) bool {
	if !Allowed(id, Publish, topic) {
		return false
	}
	switch id.Role {
	case RoleCoordinator:
		return true
	case RoleDevice:
		p, err := Parse(topic)
		if err != nil || p.Device != id.ID || p.Direction != "out" || p.Kind != KindBlob || len(p.Rest) != 2 || p.Rest[1] != "desc" {
			return false
		}
		return isHexSHA256(p.Rest[0])
	}
	return false
}

// RetainedDeviceBlobDescriptor is the topic pattern of the only retained
// messages a device may publish (see RetainAllowed), for documentation and
// broker configuration.
const RetainedDeviceBlobDescriptor = "dev/{device}/out/blob/{id}/desc"

func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Package blob moves large payloads (models, updates) over a
// transport.Transport as content-addressed chunks.
//
// A Sender offers a blob: it splits it into chunks (default 256 KiB), names
// it by the SHA-256 of the whole (its ID) and publishes a BlobDescriptor
// with every chunk's hash, retained, on the blob's descriptor topic. It then
// answers BlobRequests by publishing the requested chunks. A Receiver
// fetches a blob by ID with a windowed pull: it asks for at most Window
// chunks at a time, checks every chunk against the descriptor (a mismatch
// is counted, logged and asked for again) and the whole against the ID. The
// receiver alone knows what it is missing, so after a reconnect, or a broker
// restart that lost every message in flight, the transfer resumes with the
// missing chunks only.
//
// Topics (see internal/topics):
//
//	coordinator blobs (models), read by every device:
//	  .../global/blob/{id}/desc        descriptor, retained
//	  .../global/blob/{id}/chunk       chunks, shared by all fetching devices
//	  .../dev/{device}/out/blob/{id}/req   a device's requests
//	device blobs (updates), read by the coordinator:
//	  .../dev/{device}/out/blob/{id}/desc  descriptor, retained
//	  .../dev/{device}/out/blob/{id}/chunk chunks
//	  .../dev/{device}/in/blob/{id}/req    the coordinator's requests
//
// {id} is the lowercase hex SHA-256. Payloads are the protobuf messages
// fedgepb.BlobDescriptor, BlobChunk and BlobRequest.
package blob

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/fedge-dev/fedge/internal/topics"
)

// ID is a blob's SHA-256.
type ID [32]byte

// Sum returns the ID of payload.
func Sum(payload []byte) ID { return sha256.Sum256(payload) }

// String is the lowercase hex form used in topics.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// ParseID parses the hex form of an ID.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*len(id) {
		return id, fmt.Errorf("%w: id %q is not 64 hex digits", ErrInvalid, s)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("%w: id %q: %v", ErrInvalid, s, err)
	}
	return id, nil
}

func idFromBytes(b []byte) (ID, error) {
	var id ID
	if len(b) != len(id) {
		return id, fmt.Errorf("%w: blob id is %d bytes, want %d", ErrInvalid, len(b), len(id))
	}
	copy(id[:], b)
	return id, nil
}

// Errors of the package; decode and validation errors wrap ErrInvalid.
var (
	ErrInvalid      = errors.New("invalid blob message")
	ErrHashMismatch = errors.New("hash mismatch")
	ErrUnknownBlob  = errors.New("unknown blob")
	ErrBusy         = errors.New("blob is being fetched already")
	ErrRateLimited  = errors.New("requester over its rate")
)

// Origin says who serves a blob, which fixes its topics: the fleet's
// coordinator (Device empty) or one device.
type Origin struct {
	Fleet  string
	Device string // empty: the coordinator
}

// Coordinator is the origin of coordinator blobs of a fleet.
func Coordinator(fleet string) Origin { return Origin{Fleet: fleet} }

// Device is the origin of blobs a device sends.
func Device(fleet, device string) Origin { return Origin{Fleet: fleet, Device: device} }

func (o Origin) base(id ID) string {
	if o.Device == "" {
		return topics.GlobalBlob(o.Fleet, id.String())
	}
	return topics.DeviceOut(o.Fleet, o.Device, topics.KindBlob) + "/" + id.String()
}

// DescriptorTopic is where the descriptor of id is published (retained).
func (o Origin) DescriptorTopic(id ID) string { return o.base(id) + "/desc" }

// ChunkTopic is where the chunks of id are published.
func (o Origin) ChunkTopic(id ID) string { return o.base(id) + "/chunk" }

// RequestTopic is where requester asks for chunks of id: a device id for
// coordinator blobs; ignored for device blobs, which only the coordinator
// fetches.
func (o Origin) RequestTopic(id ID, requester string) string {
	if o.Device == "" {
		return topics.DeviceOut(o.Fleet, requester, topics.KindBlob) + "/" + id.String() + "/req"
	}
	return topics.DeviceIn(o.Fleet, o.Device, topics.KindBlob) + "/" + id.String() + "/req"
}

// RequestFilter is the filter a Sender of this origin subscribes to for
// requests.
func (o Origin) RequestFilter() string {
	if o.Device == "" {
		return topics.FleetRoot(o.Fleet) + "/dev/+/out/" + topics.KindBlob + "/+/req"
	}
	return topics.DeviceIn(o.Fleet, o.Device, topics.KindBlob) + "/+/req"
}

// requestID extracts the {id} segment of a request topic.
func requestID(topic string) (ID, error) {
	p, err := topics.Parse(topic)
	if err != nil {
		return ID{}, fmt.Errorf("%w: request topic: %w", ErrInvalid, err)
	}
	if p.Kind != topics.KindBlob || len(p.Rest) != 2 || p.Rest[1] != "req" {
		return ID{}, fmt.Errorf("%w: %q is not a blob request topic", ErrInvalid, topic)
	}
	return ParseID(p.Rest[0])
}

package round

import (
	"github.com/fedge-dev/fedge/coordinator/store"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// Ready is the machine's output: persist Batch (atomically), then publish
// Messages in order. Commits and Ended are informational (metrics, CLI).
type Ready struct {
	Batch    store.Batch
	Messages []Message
	Commits  []Commit
	Ended    []*store.Run
}

func (rd *Ready) empty() bool {
	return rd.Batch.Empty() && len(rd.Messages) == 0 && len(rd.Commits) == 0 && len(rd.Ended) == 0
}

// MessageKind says what a Message carries and where it goes.
type MessageKind int

const (
	// MsgTask is a RoundTask to Device (topics.KindTask).
	MsgTask MessageKind = iota + 1
	// MsgAck is an Ack to Device (topics.KindAck).
	MsgAck
	// MsgAnnouncement is the retained RoundAnnouncement (topics.Round).
	MsgAnnouncement
	// MsgManifest is the retained manifest of Model (topics.Manifest); the
	// driver also offers Model's weights as a blob.
	MsgManifest
)

func (k MessageKind) String() string {
	switch k {
	case MsgTask:
		return "task"
	case MsgAck:
		return "ack"
	case MsgAnnouncement:
		return "announcement"
	case MsgManifest:
		return "manifest"
	}
	return "unknown"
}

// Message is one message to publish. Every message is idempotent: a
// republished task or ack is recognized by the device.
type Message struct {
	Kind         MessageKind
	Device       string // MsgTask, MsgAck
	Task         *fedgepb.RoundTask
	Ack          *fedgepb.Ack
	Announcement *fedgepb.RoundAnnouncement
	Model        *store.ModelVersion // MsgManifest
}

// Retained reports whether the message is published with the retain flag.
func (m Message) Retained() bool { return m.Kind == MsgAnnouncement || m.Kind == MsgManifest }

// Commit reports a round that produced a new global model version.
type Commit struct {
	RunID, RoundID, Version uint64
	Participants            int
}

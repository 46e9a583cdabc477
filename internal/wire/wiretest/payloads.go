package wiretest

import (
	"crypto/sha256"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// Timestamp is the envelope timestamp of every table message (Unix ms).
const Timestamp int64 = 1_750_000_000_000

// Nonce is the nonce of the table's round task and the updates echoing it.
var Nonce = Hash("nonce")[:16]

// ChunkData is the data of the good blob chunk.
var ChunkData = []byte("fedge wiretest chunk data")

// Good returns a fresh valid payload of type typ as the table's senders send
// it (device payloads name Device), and the topic it travels on. It panics
// for types it does not know (a broken table is a bug).
func Good(typ fedgepb.PayloadType) (proto.Message, string) {
	in := func(kind string) string { return topics.DeviceIn(Fleet, Device, kind) }
	out := func(kind string) string { return topics.DeviceOut(Fleet, Device, kind) }
	switch typ {
	case fedgepb.PayloadType_PAYLOAD_TYPE_HELLO:
		return &fedgepb.Hello{
			DeviceId: Device, AgentVersion: "v0.1.0",
			Capabilities: &fedgepb.Capabilities{Arch: "arm64", MemoryBytes: 1 << 30, SampleCount: 600,
				Tags: map[string]string{"region": "eu-west"}, AbiVersions: []uint32{1}},
			InstalledModelVersion: 3, InstalledModelHash: Hash("weights v3"),
		}, out(topics.KindStatus)
	case fedgepb.PayloadType_PAYLOAD_TYPE_STATUS:
		return &fedgepb.Status{DeviceId: Device, State: fedgepb.DeviceState_DEVICE_STATE_ONLINE,
			InstalledModelVersion: 3, RoundId: 7}, out(topics.KindStatus)
	case fedgepb.PayloadType_PAYLOAD_TYPE_ROUND_TASK:
		return &fedgepb.RoundTask{
			RoundId: 7, Kind: fedgepb.TaskKind_TASK_KIND_TRAIN, ModelId: "mnist-2nn", ModelVersion: 3,
			BaseModelHash: Hash("weights v3"),
			Train: &fedgepb.TrainConfig{Epochs: 1, BatchSize: 32, LearningRate: 0.05,
				Codec: fedgepb.Codec_CODEC_FLOAT32, Seed: 42, ClipNorm: 10},
			DeadlineUnixMs: Timestamp + 60_000, Nonce: Nonce,
			Secagg: &fedgepb.SecAggParams{Threshold: 2, Degree: 2, RoundSeed: Hash("seed"), ClipRange: 1,
				QuantBits: 16, Participants: []string{Device, OtherDevice, "dev-3"}},
		}, in(topics.KindTask)
	case fedgepb.PayloadType_PAYLOAD_TYPE_ROUND_ANNOUNCEMENT:
		return &fedgepb.RoundAnnouncement{RoundId: 7, ModelId: "mnist-2nn", ModelVersion: 3, Open: true},
			topics.Round(Fleet)
	case fedgepb.PayloadType_PAYLOAD_TYPE_MODEL_MANIFEST:
		return Manifest(), topics.Manifest(Fleet)
	case fedgepb.PayloadType_PAYLOAD_TYPE_UPDATE:
		return &fedgepb.Update{
			RoundId: 7, DeviceId: Device, BaseModelHash: Hash("weights v3"), SampleCount: 600,
			Codec: fedgepb.Codec_CODEC_FLOAT32, EncodedDelta: make([]byte, 64), DeltaLength: 64,
			Metrics: &fedgepb.TrainMetrics{Loss: 0.31, Accuracy: 0.91, Steps: 19, TrainMillis: 120},
			Nonce:   Nonce,
		}, out(topics.KindUpdate)
	case fedgepb.PayloadType_PAYLOAD_TYPE_EVALUATE_RESULT:
		return &fedgepb.EvaluateResult{RoundId: 7, DeviceId: Device, BaseModelHash: Hash("weights v3"),
			SampleCount: 100, Loss: 0.4, Accuracy: 0.88, Nonce: Nonce}, out(topics.KindUpdate)
	case fedgepb.PayloadType_PAYLOAD_TYPE_ACK:
		return &fedgepb.Ack{RoundId: 7, MessageId: messageID("update"), Accepted: true}, in(topics.KindAck)
	case fedgepb.PayloadType_PAYLOAD_TYPE_BLOB_DESCRIPTOR:
		return &fedgepb.BlobDescriptor{BlobId: Hash("blob"), Length: 600, ChunkSize: 256,
			ChunkHashes: [][]byte{Hash("c0"), Hash("c1"), Hash("c2")}}, out(topics.KindBlob)
	case fedgepb.PayloadType_PAYLOAD_TYPE_BLOB_CHUNK:
		sum := sha256.Sum256(ChunkData)
		return &fedgepb.BlobChunk{BlobId: Hash("blob"), Index: 1, ChunkHash: sum[:], Data: ChunkData},
			out(topics.KindBlob)
	case fedgepb.PayloadType_PAYLOAD_TYPE_BLOB_REQUEST:
		return &fedgepb.BlobRequest{BlobId: Hash("blob"), Indices: []uint32{0, 2}}, in(topics.KindBlob)
	case fedgepb.PayloadType_PAYLOAD_TYPE_ENROLL_REQUEST:
		return &fedgepb.EnrollRequest{DeviceId: NewDevice, PublicKey: Public(NewDevice), EnrollmentToken: "token"},
			topics.DeviceOut(Fleet, NewDevice, topics.KindEnroll)
	case fedgepb.PayloadType_PAYLOAD_TYPE_ENROLL_RESPONSE:
		return &fedgepb.EnrollResponse{DeviceId: Device, Accepted: true}, in(topics.KindEnroll)
	case fedgepb.PayloadType_PAYLOAD_TYPE_SECAGG:
		return &fedgepb.SecAggMessage{RoundId: 7, Stage: 1, Body: []byte("stage one")}, out(topics.KindSecAgg)
	}
	panic("wiretest: no good payload for " + typ.String())
}

// PayloadTypes lists every payload type the table has a good message for.
func PayloadTypes() []fedgepb.PayloadType {
	var ts []fedgepb.PayloadType
	for t := fedgepb.PayloadType_PAYLOAD_TYPE_HELLO; t <= fedgepb.PayloadType_PAYLOAD_TYPE_SECAGG; t++ {
		ts = append(ts, t)
	}
	return ts
}

// Manifest returns a fresh valid manifest signed by the coordinator's key.
func Manifest() *fedgepb.ModelManifest {
	m := &fedgepb.ModelManifest{
		ModelId: "mnist-2nn", Version: 3, WasmHash: Hash("wasm"), WasmLength: 2400,
		WeightsHash: Hash("weights v3"), WeightsLength: 4 * 159010, ParamCount: 159010,
		RoundId: 6, CreatedUnixMs: Timestamp,
	}
	if err := wire.SignManifest(m, Key(wire.CoordinatorID)); err != nil {
		panic("wiretest: " + err.Error())
	}
	return m
}

// senderOf returns who sends payloads of type typ in the table.
func senderOf(typ fedgepb.PayloadType) string {
	switch typ {
	case fedgepb.PayloadType_PAYLOAD_TYPE_ROUND_TASK, fedgepb.PayloadType_PAYLOAD_TYPE_ROUND_ANNOUNCEMENT,
		fedgepb.PayloadType_PAYLOAD_TYPE_MODEL_MANIFEST, fedgepb.PayloadType_PAYLOAD_TYPE_ACK,
		fedgepb.PayloadType_PAYLOAD_TYPE_BLOB_REQUEST, fedgepb.PayloadType_PAYLOAD_TYPE_ENROLL_RESPONSE:
		return wire.CoordinatorID
	case fedgepb.PayloadType_PAYLOAD_TYPE_ENROLL_REQUEST:
		return NewDevice
	}
	return Device
}

package wire

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"math"

	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// Per-type payload validators. Each returns a *RejectError (bad_field unless
// said otherwise) for the first problem found.

func validateCapabilities(c *fedgepb.Capabilities, l Limits) error {
	if c == nil {
		return nil
	}
	if err := checkString("capabilities.arch", c.Arch, l); err != nil {
		return err
	}
	if c.SampleCount > l.MaxSampleCount {
		return bad("capabilities.sample_count %d above %d", c.SampleCount, l.MaxSampleCount)
	}
	if err := checkCount("capabilities.tags", len(c.Tags), l); err != nil {
		return err
	}
	for k, v := range c.Tags {
		if k == "" {
			return bad("capabilities.tags has an empty key")
		}
		if err := checkString("capabilities.tags key", k, l); err != nil {
			return err
		}
		if err := checkString("capabilities.tags["+k+"]", v, l); err != nil {
			return err
		}
	}
	if err := checkCount("capabilities.abi_versions", len(c.AbiVersions), l); err != nil {
		return err
	}
	if err := checkCount("capabilities.features", len(c.Features), l); err != nil {
		return err
	}
	for _, f := range c.Features {
		if err := checkString("capabilities.features", f, l); err != nil {
			return err
		}
	}
	return nil
}

func validateHello(m *fedgepb.Hello, l Limits) error {
	if err := checkID("device_id", m.DeviceId); err != nil {
		return err
	}
	if err := checkString("agent_version", m.AgentVersion, l); err != nil {
		return err
	}
	if err := validateCapabilities(m.Capabilities, l); err != nil {
		return err
	}
	return checkOptionalHash("installed_model_hash", m.InstalledModelHash)
}

func validateStatus(m *fedgepb.Status, l Limits) error {
	if err := checkID("device_id", m.DeviceId); err != nil {
		return err
	}
	if err := checkEnum("state", m.State, fedgepb.DeviceState_name); err != nil {
		return err
	}
	if m.State == fedgepb.DeviceState_DEVICE_STATE_DROPPED && m.RoundId == 0 {
		return bad("state DROPPED without round_id")
	}
	return checkString("reason", m.Reason, l)
}

func validateTrainConfig(c *fedgepb.TrainConfig) error {
	if c.Epochs == 0 || c.Epochs > 10000 {
		return bad("train.epochs %d outside 1..10000", c.Epochs)
	}
	if c.BatchSize == 0 || c.BatchSize > 1<<20 {
		return bad("train.batch_size %d outside 1..%d", c.BatchSize, 1<<20)
	}
	if !finite(float64(c.LearningRate)) || c.LearningRate <= 0 {
		return bad("train.learning_rate = %v, want finite > 0", c.LearningRate)
	}
	if err := checkFloat("train.proximal_mu", float64(c.ProximalMu), 0, math.MaxFloat32); err != nil {
		return err
	}
	if err := checkEnum("train.codec", c.Codec, fedgepb.Codec_name); err != nil {
		return err
	}
	if err := checkFloat("train.clip_norm", float64(c.ClipNorm), 0, math.MaxFloat32); err != nil {
		return err
	}
	if err := checkFloat("train.topk_fraction", float64(c.TopkFraction), 0, 1); err != nil {
		return err
	}
	if c.Codec == fedgepb.Codec_CODEC_TOPK && c.TopkFraction == 0 {
		return bad("train.topk_fraction is 0 with CODEC_TOPK")
	}
	return nil
}

func validateSecAggParams(p *fedgepb.SecAggParams, l Limits) error {
	n := len(p.Participants)
	if err := checkCount("secagg.participants", n, l); err != nil {
		return err
	}
	if n < 2 {
		return bad("secagg has %d participants, want at least 2", n)
	}
	seen := make(map[string]struct{}, n)
	for _, id := range p.Participants {
		if err := checkID("secagg.participants", id); err != nil {
			return err
		}
		if _, dup := seen[id]; dup {
			return bad("secagg.participants lists %q twice", id)
		}
		seen[id] = struct{}{}
	}
	if p.Threshold == 0 || int(p.Threshold) > n {
		return bad("secagg.threshold %d outside 1..%d", p.Threshold, n)
	}
	if int(p.Degree) >= n {
		return bad("secagg.degree %d not below participant count %d", p.Degree, n)
	}
	if err := checkHash("secagg.round_seed", p.RoundSeed); err != nil {
		return err
	}
	if !finite(float64(p.ClipRange)) || p.ClipRange <= 0 {
		return bad("secagg.clip_range = %v, want finite > 0", p.ClipRange)
	}
	if p.QuantBits == 0 || p.QuantBits > 64 {
		return bad("secagg.quant_bits %d outside 1..64", p.QuantBits)
	}
	return nil
}

func validateRoundTask(m *fedgepb.RoundTask, l Limits) error {
	if err := checkRound(m.RoundId); err != nil {
		return err
	}
	if err := checkEnum("kind", m.Kind, fedgepb.TaskKind_name); err != nil {
		return err
	}
	if err := checkID("model_id", m.ModelId); err != nil {
		return err
	}
	if m.ModelVersion == 0 {
		return bad("model_version is 0")
	}
	if err := checkHash("base_model_hash", m.BaseModelHash); err != nil {
		return err
	}
	switch m.Kind {
	case fedgepb.TaskKind_TASK_KIND_TRAIN:
		if m.Train == nil {
			return bad("train task without train config")
		}
		if err := validateTrainConfig(m.Train); err != nil {
			return err
		}
	case fedgepb.TaskKind_TASK_KIND_EVALUATE:
		if m.Evaluate == nil {
			return bad("evaluate task without evaluate config")
		}
		if m.Evaluate.BatchSize == 0 || m.Evaluate.BatchSize > 1<<20 {
			return bad("evaluate.batch_size %d outside 1..%d", m.Evaluate.BatchSize, 1<<20)
		}
	}
	if m.DeadlineUnixMs <= 0 {
		return bad("deadline %d not positive", m.DeadlineUnixMs)
	}
	if err := checkNonce(m.Nonce); err != nil {
		return err
	}
	if m.Secagg != nil {
		return validateSecAggParams(m.Secagg, l)
	}
	return nil
}

func validateAnnouncement(m *fedgepb.RoundAnnouncement, _ Limits) error {
	if m.Open && m.RoundId == 0 {
		return bad("open announcement with round id 0")
	}
	if m.ModelId != "" {
		return checkID("model_id", m.ModelId)
	}
	if m.Open {
		return bad("open announcement without model id")
	}
	return nil
}

func validateMetrics(m *fedgepb.TrainMetrics) error {
	if m == nil {
		return nil
	}
	if !finite(m.Loss) {
		return bad("metrics.loss = %v", m.Loss)
	}
	return checkFloat("metrics.accuracy", m.Accuracy, 0, 1)
}

func validateUpdate(m *fedgepb.Update, l Limits) error {
	if err := checkRound(m.RoundId); err != nil {
		return err
	}
	if err := checkID("device_id", m.DeviceId); err != nil {
		return err
	}
	if err := checkHash("base_model_hash", m.BaseModelHash); err != nil {
		return err
	}
	if err := checkSamples(m.SampleCount, l); err != nil {
		return err
	}
	if err := checkEnum("codec", m.Codec, fedgepb.Codec_name); err != nil {
		return err
	}
	inline, blob := len(m.EncodedDelta) > 0, len(m.DeltaBlobId) > 0
	switch {
	case inline == blob:
		return bad("update needs exactly one of encoded_delta and delta_blob_id")
	case inline && m.DeltaLength != uint64(len(m.EncodedDelta)):
		return bad("delta_length %d, inline delta has %d bytes", m.DeltaLength, len(m.EncodedDelta))
	case blob:
		if err := checkHash("delta_blob_id", m.DeltaBlobId); err != nil {
			return err
		}
		if m.DeltaLength == 0 || m.DeltaLength > l.MaxBlobBytes {
			return Reject(ReasonTooLarge, "delta_length %d outside 1..%d", m.DeltaLength, l.MaxBlobBytes)
		}
	}
	if err := validateMetrics(m.Metrics); err != nil {
		return err
	}
	return checkNonce(m.Nonce)
}

func validateEvaluateResult(m *fedgepb.EvaluateResult, l Limits) error {
	if err := checkRound(m.RoundId); err != nil {
		return err
	}
	if err := checkID("device_id", m.DeviceId); err != nil {
		return err
	}
	if err := checkHash("base_model_hash", m.BaseModelHash); err != nil {
		return err
	}
	if err := checkSamples(m.SampleCount, l); err != nil {
		return err
	}
	if !finite(m.Loss) {
		return bad("loss = %v", m.Loss)
	}
	if err := checkFloat("accuracy", m.Accuracy, 0, 1); err != nil {
		return err
	}
	return checkNonce(m.Nonce)
}

// MaxRetryAfterMs bounds a "retry later" Ack's delay.
const MaxRetryAfterMs = 10 * 60 * 1000

func validateAck(m *fedgepb.Ack, l Limits) error {
	if m.RetryAfterMs > 0 {
		switch {
		case m.RetryAfterMs > MaxRetryAfterMs:
			return bad("retry_after_ms %d over %d", m.RetryAfterMs, MaxRetryAfterMs)
		case m.Accepted || m.RoundId != 0 || len(m.MessageId) != 0:
			return bad("a retry-later ack names no round or message and accepts nothing")
		}
		return checkString("reason", m.Reason, l)
	}
	if err := checkRound(m.RoundId); err != nil {
		return err
	}
	if len(m.MessageId) != MessageIDSize {
		return bad("ack message_id has %d bytes, want %d", len(m.MessageId), MessageIDSize)
	}
	if m.Accepted && m.Reason != "" {
		return bad("accepted ack with a refusal reason")
	}
	return checkString("reason", m.Reason, l)
}

func validateBlobDescriptor(m *fedgepb.BlobDescriptor, l Limits) error {
	if err := checkHash("blob_id", m.BlobId); err != nil {
		return err
	}
	if m.Length == 0 || m.Length > l.MaxBlobBytes {
		return Reject(ReasonTooLarge, "blob length %d outside 1..%d", m.Length, l.MaxBlobBytes)
	}
	if m.ChunkSize == 0 || int64(m.ChunkSize) > int64(l.MaxChunkBytes) {
		return Reject(ReasonTooLarge, "chunk size %d outside 1..%d", m.ChunkSize, l.MaxChunkBytes)
	}
	if err := checkCount("chunk_hashes", len(m.ChunkHashes), l); err != nil {
		return err
	}
	want := (m.Length + uint64(m.ChunkSize) - 1) / uint64(m.ChunkSize)
	if uint64(len(m.ChunkHashes)) != want {
		return bad("%d chunk hashes for %d bytes in %d-byte chunks, want %d", len(m.ChunkHashes), m.Length, m.ChunkSize, want)
	}
	for i, h := range m.ChunkHashes {
		if err := checkHash(fmt.Sprintf("chunk_hashes[%d]", i), h); err != nil {
			return err
		}
	}
	return nil
}

func validateBlobChunk(m *fedgepb.BlobChunk, l Limits) error {
	if err := checkHash("blob_id", m.BlobId); err != nil {
		return err
	}
	if err := checkHash("chunk_hash", m.ChunkHash); err != nil {
		return err
	}
	if len(m.Data) == 0 {
		return bad("chunk %d has no data", m.Index)
	}
	if len(m.Data) > l.MaxChunkBytes {
		return Reject(ReasonTooLarge, "chunk %d has %d bytes, limit %d", m.Index, len(m.Data), l.MaxChunkBytes)
	}
	if sum := sha256.Sum256(m.Data); !bytes.Equal(sum[:], m.ChunkHash) {
		return Reject(ReasonHashMismatch, "chunk %d of blob %x hashes to %x, carries %x", m.Index, m.BlobId, sum, m.ChunkHash)
	}
	return nil
}

func validateBlobRequest(m *fedgepb.BlobRequest, l Limits) error {
	if err := checkHash("blob_id", m.BlobId); err != nil {
		return err
	}
	return checkCount("indices", len(m.Indices), l)
}

func validateEnrollRequest(m *fedgepb.EnrollRequest, l Limits) error {
	if err := checkID("device_id", m.DeviceId); err != nil {
		return err
	}
	if len(m.PublicKey) != ed25519.PublicKeySize {
		return bad("public_key has %d bytes, want %d", len(m.PublicKey), ed25519.PublicKeySize)
	}
	if err := checkString("enrollment_token", m.EnrollmentToken, l); err != nil {
		return err
	}
	return validateCapabilities(m.Capabilities, l)
}

func validateEnrollResponse(m *fedgepb.EnrollResponse, l Limits) error {
	if err := checkID("device_id", m.DeviceId); err != nil {
		return err
	}
	if m.Accepted && m.PendingApproval {
		return bad("enroll response both accepted and pending")
	}
	return checkString("reason", m.Reason, l)
}

func validateSecAgg(m *fedgepb.SecAggMessage, _ Limits) error {
	if err := checkRound(m.RoundId); err != nil {
		return err
	}
	if m.Stage == 0 {
		return bad("secagg stage is 0")
	}
	if len(m.Body) == 0 {
		return bad("secagg body is empty")
	}
	return nil
}

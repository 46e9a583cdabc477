package store

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
)

func decodeID(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

func (s *kvStore) Run(ctx context.Context, runID uint64) (*Run, error) {
	return getOne(s, ctx, fmt.Sprintf("run %d", runID), idKey(prefixRun, runID), decodeRun)
}

func (s *kvStore) Runs(ctx context.Context) ([]*Run, error) {
	return list(s, ctx, "runs", []byte(prefixRun), nil, decodeRun, nil, 0)
}

func (s *kvStore) Round(ctx context.Context, roundID uint64) (*Round, error) {
	return getOne(s, ctx, fmt.Sprintf("round %d", roundID), idKey(prefixRound, roundID), decodeRound)
}

func (s *kvStore) Optimizer(ctx context.Context, runID uint64) (*Optimizer, error) {
	return getOne(s, ctx, fmt.Sprintf("optimizer state of run %d", runID), idKey(prefixOptim, runID), decodeOptimizer)
}

func (s *kvStore) Rounds(ctx context.Context, runID uint64) ([]*Round, error) {
	keep := func(r *Round) bool { return runID == 0 || r.RunId == runID }
	return list(s, ctx, "rounds", []byte(prefixRound), nil, decodeRound, keep, 0)
}

func (s *kvStore) LatestRoundID(ctx context.Context) (uint64, error) {
	return s.lastID(ctx, "round", prefixRound)
}

func (s *kvStore) Updates(ctx context.Context, roundID uint64) ([]*Update, error) {
	ups, err := list(s, ctx, fmt.Sprintf("updates of round %d", roundID), idKey(prefixUpdate, roundID), nil, decodeUpdate, nil, 0)
	if err != nil {
		return nil, err
	}
	sortUpdates(ups)
	return ups, nil
}

func (s *kvStore) ModelVersion(ctx context.Context, version uint64) (*ModelVersion, error) {
	return getOne(s, ctx, fmt.Sprintf("model version %d", version), idKey(prefixVersion, version), decodeModelVersion)
}

func (s *kvStore) ModelVersions(ctx context.Context, withBlobs bool) ([]*ModelVersion, error) {
	dec := decodeModelVersion
	if !withBlobs {
		dec = func(b []byte) (*ModelVersion, error) {
			m, err := decodeModelVersion(b)
			if err == nil {
				m.Weights, m.Manifest = nil, nil
			}
			return m, err
		}
	}
	return list(s, ctx, "model versions", []byte(prefixVersion), nil, dec, nil, 0)
}

func (s *kvStore) LatestModelVersion(ctx context.Context) (uint64, error) {
	return s.lastID(ctx, "model version", prefixVersion)
}

func (s *kvStore) Device(ctx context.Context, id string) (*Device, error) {
	return getOne(s, ctx, "device "+id, strKey(prefixDevice, id), decodeDevice)
}

func (s *kvStore) Devices(ctx context.Context) ([]*Device, error) {
	return list(s, ctx, "devices", []byte(prefixDevice), nil, decodeDevice, nil, 0)
}

func (s *kvStore) Metrics(ctx context.Context, runID uint64) ([]*Metrics, error) {
	keep := func(m *Metrics) bool { return runID == 0 || m.RunId == runID }
	return list(s, ctx, "metrics", []byte(prefixMetrics), nil, decodeMetrics, keep, 0)
}

func (s *kvStore) Audit(ctx context.Context, after uint64, limit int) ([]*AuditEntry, error) {
	if after == math.MaxUint64 {
		return nil, nil
	}
	return list(s, ctx, "audit log", []byte(prefixAudit), idKey(prefixAudit, after+1), decodeAudit, nil, limit)
}

func (s *kvStore) Token(ctx context.Context, hash []byte) (*Token, error) {
	if len(hash) != sha256.Size {
		return nil, fmt.Errorf("read token: %w: hash of %d bytes", ErrInvalid, len(hash))
	}
	return getOne(s, ctx, "token", bytesKey(prefixToken, hash), decodeToken)
}

// sortUpdates orders updates by arrival (the fold order), then device.
func sortUpdates(ups []*Update) {
	slices.SortFunc(ups, func(a, b *Update) int {
		if c := cmp.Compare(a.Arrival, b.Arrival); c != 0 {
			return c
		}
		return cmp.Compare(a.DeviceId, b.DeviceId)
	})
}

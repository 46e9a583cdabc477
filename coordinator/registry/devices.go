// Package registry holds the coordinator's registries: enrolled devices
// with their Ed25519 keys (enrollment by one-time token or admin
// approval), broker credentials kept as salted hashes in the data
// directory, and the model modules (the embedded reference models plus
// user-added .wasm files that pass the runtime's validation).
//
// Registries never write to the store themselves: their mutating methods
// return the store.Batch to apply, so the coordinator's driver stays the
// single writer and persists before it answers. Call Committed after a
// batch is applied to update the in-memory key cache.
package registry

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/fedge-dev/fedge/coordinator/store"
	"github.com/fedge-dev/fedge/internal/topics"
	"github.com/fedge-dev/fedge/internal/wire"
	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// Errors of the device registry.
var (
	ErrUnknownDevice = errors.New("unknown device")
	ErrExists        = errors.New("already exists")
	ErrState         = errors.New("wrong enrollment state")
)

// Enrollment refusal reasons (EnrollResponse.reason).
const (
	RefuseBadToken   = "bad_token"
	RefuseKeyChanged = "key_changed"
	RefuseRevoked    = "revoked"
	RefuseBadKey     = "bad_key"
	RefuseReservedID = "reserved_id" // the id collides with a service identity (topics.ValidateDeviceID)
)

// TokenBytes is the entropy of an enrollment token.
const TokenBytes = 32

// Devices is the device registry. It is safe for concurrent use.
type Devices struct {
	st store.Store

	mu   sync.RWMutex
	keys map[string]ed25519.PublicKey // approved devices only
}

// NewDevices loads the approved devices' keys from st.
func NewDevices(ctx context.Context, st store.Store) (*Devices, error) {
	d := &Devices{st: st, keys: map[string]ed25519.PublicKey{}}
	devs, err := st.Devices(ctx)
	if err != nil {
		return nil, fmt.Errorf("load devices: %w", err)
	}
	for _, r := range devs {
		d.cache(r)
	}
	return d, nil
}

func (d *Devices) cache(r *store.Device) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if r.EnrollState == fedgepb.EnrollState_ENROLL_STATE_APPROVED && len(r.PublicKey) == ed25519.PublicKeySize {
		d.keys[r.DeviceId] = ed25519.PublicKey(append([]byte(nil), r.PublicKey...))
		return
	}
	delete(d.keys, r.DeviceId)
}

// Committed updates the key cache from the device records of an applied
// batch.
func (d *Devices) Committed(b *store.Batch) {
	for _, r := range b.Devices {
		d.cache(r)
	}
}

// Approved reports whether id is enrolled and approved.
func (d *Devices) Approved(id string) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	_, ok := d.keys[id]
	return ok
}

// KeyFunc verifies envelopes of approved devices only; enrollment requests
// are verified with the key they carry (wire.WithEnrollment).
func (d *Devices) KeyFunc() wire.KeyFunc {
	return wire.WithEnrollment(func(env *wire.Envelope) (ed25519.PublicKey, error) {
		d.mu.RLock()
		k, ok := d.keys[env.Sender]
		d.mu.RUnlock()
		if !ok {
			return nil, fmt.Errorf("%w: device %q is not enrolled", wire.ErrUnknownSender, env.Sender)
		}
		return k, nil
	})
}

// HashToken is the stored form of an enrollment token.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// NewToken returns a fresh random enrollment token.
func NewToken() (string, error) {
	b := make([]byte, TokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate enrollment token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Add registers device id as expected (pending, no key yet) with a new
// one-time enrollment token valid until expiresUnixMs (0: no expiry). The
// token is returned once; only its hash is stored.
func (d *Devices) Add(ctx context.Context, id string, nowUnixMs, expiresUnixMs int64) (string, *store.Batch, error) {
	if err := topics.ValidateDeviceID(id); err != nil {
		return "", nil, fmt.Errorf("add device: %w", err)
	}
	rec, err := d.st.Device(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		rec = &store.Device{DeviceId: id, EnrollState: fedgepb.EnrollState_ENROLL_STATE_PENDING}
	case err != nil:
		return "", nil, fmt.Errorf("add device %s: %w", id, err)
	case rec.EnrollState == fedgepb.EnrollState_ENROLL_STATE_APPROVED:
		return "", nil, fmt.Errorf("add device %s: %w: it is enrolled", id, ErrExists)
	}
	tok, err := NewToken()
	if err != nil {
		return "", nil, err
	}
	b := &store.Batch{
		Devices: []*store.Device{rec},
		Tokens: []*store.Token{{
			TokenHash: HashToken(tok), Label: id, UsesLeft: 1,
			ExpiresUnixMs: expiresUnixMs, CreatedUnixMs: nowUnixMs,
		}},
	}
	return tok, b, nil
}

// Enroll answers an enrollment request whose envelope was verified with
// the key it carries. A valid one-time token issued for this device
// approves it at once; without a token the device waits for Approve. The
// batch (possibly empty) must be applied before the response is sent.
func (d *Devices) Enroll(ctx context.Context, req *fedgepb.EnrollRequest, nowUnixMs int64) (*fedgepb.EnrollResponse, *store.Batch, error) {
	id := req.GetDeviceId()
	resp := &fedgepb.EnrollResponse{DeviceId: id}
	b := &store.Batch{}
	if topics.ValidateDeviceID(id) != nil {
		resp.Reason = RefuseReservedID
		return resp, b, nil
	}
	if len(req.PublicKey) != ed25519.PublicKeySize {
		resp.Reason = RefuseBadKey
		return resp, b, nil
	}
	rec, err := d.st.Device(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		rec, err = &store.Device{DeviceId: id}, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("enroll %s: %w", id, err)
	}
	rec = proto.Clone(rec).(*store.Device)
	switch {
	case rec.EnrollState == fedgepb.EnrollState_ENROLL_STATE_REVOKED:
		resp.Reason = RefuseRevoked
		return resp, b, nil
	case len(rec.PublicKey) > 0 && subtle.ConstantTimeCompare(rec.PublicKey, req.PublicKey) != 1:
		// A key is registered once; a new key takes an admin (revoke, add).
		resp.Reason = RefuseKeyChanged
		return resp, b, nil
	case rec.EnrollState == fedgepb.EnrollState_ENROLL_STATE_APPROVED:
		resp.Accepted = true
		return resp, b, nil
	}
	if req.EnrollmentToken != "" {
		h := HashToken(req.EnrollmentToken)
		tok, err := d.st.Token(ctx, h)
		switch {
		case errors.Is(err, store.ErrNotFound):
			resp.Reason = RefuseBadToken
			return resp, b, nil
		case err != nil:
			return nil, nil, fmt.Errorf("enroll %s: %w", id, err)
		case tok.Label != id || tok.UsesLeft == 0 || (tok.ExpiresUnixMs > 0 && nowUnixMs > tok.ExpiresUnixMs):
			resp.Reason = RefuseBadToken
			return resp, b, nil
		}
		rec.PublicKey = append([]byte(nil), req.PublicKey...)
		rec.EnrollState = fedgepb.EnrollState_ENROLL_STATE_APPROVED
		rec.EnrolledUnixMs = nowUnixMs
		rec.Capabilities = req.Capabilities
		b.Devices = append(b.Devices, rec)
		b.DeleteTokens = append(b.DeleteTokens, h)
		resp.Accepted = true
		return resp, b, nil
	}
	// No token: remember the key and wait for an admin.
	if len(rec.PublicKey) == 0 || rec.EnrollState != fedgepb.EnrollState_ENROLL_STATE_PENDING {
		rec.PublicKey = append([]byte(nil), req.PublicKey...)
		rec.EnrollState = fedgepb.EnrollState_ENROLL_STATE_PENDING
		rec.Capabilities = req.Capabilities
		b.Devices = append(b.Devices, rec)
	}
	resp.PendingApproval = true
	return resp, b, nil
}

// Approve approves a pending device that has sent its key.
func (d *Devices) Approve(ctx context.Context, id string, nowUnixMs int64) (*store.Batch, error) {
	rec, err := d.st.Device(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("approve %s: %w", id, ErrUnknownDevice)
	}
	if err != nil {
		return nil, fmt.Errorf("approve %s: %w", id, err)
	}
	switch {
	case rec.EnrollState == fedgepb.EnrollState_ENROLL_STATE_APPROVED:
		return &store.Batch{}, nil
	case rec.EnrollState != fedgepb.EnrollState_ENROLL_STATE_PENDING:
		return nil, fmt.Errorf("approve %s: %w: %v", id, ErrState, rec.EnrollState)
	case len(rec.PublicKey) != ed25519.PublicKeySize:
		return nil, fmt.Errorf("approve %s: %w: the device has not sent an enrollment request yet", id, ErrState)
	}
	rec.EnrollState = fedgepb.EnrollState_ENROLL_STATE_APPROVED
	rec.EnrolledUnixMs = nowUnixMs
	return &store.Batch{Devices: []*store.Device{rec}}, nil
}

// Presence returns the record of an approved device updated with its
// online state, last-seen time and, if caps is not nil, its capabilities,
// for the caller to persist; nil (and no error) if the device is not
// approved.
func (d *Devices) Presence(ctx context.Context, id string, online bool, caps *fedgepb.Capabilities, nowUnixMs int64) (*store.Device, error) {
	if !d.Approved(id) {
		return nil, nil
	}
	rec, err := d.st.Device(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("presence of %s: %w", id, err)
	}
	rec.Online = online
	rec.LastSeenUnixMs = nowUnixMs
	if caps != nil {
		rec.Capabilities = caps
	}
	return rec, nil
}

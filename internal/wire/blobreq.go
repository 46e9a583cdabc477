package wire

import (
	"crypto/ed25519"
	"fmt"
	"time"

	fedgepb "github.com/fedge-dev/fedge/proto/fedge/v1"
)

// BlobRequestSealer signs blob requests as sender (a blob.ReceiverConfig's
// Seal): the party serving the blob answers authenticated requests only.
func BlobRequestSealer(key ed25519.PrivateKey, sender string, now func() time.Time) func(*fedgepb.BlobRequest) ([]byte, error) {
	return func(req *fedgepb.BlobRequest) ([]byte, error) {
		return Seal(key, sender, fedgepb.PayloadType_PAYLOAD_TYPE_BLOB_REQUEST, req, now())
	}
}

// BlobRequestOpener accepts a signed blob request on its topic (a
// blob.SenderConfig's Open): the envelope checks bind the sender to the
// topic, and the sender is returned as the requester. onReject, if set, is
// told why an envelope was refused.
func BlobRequestOpener(l Limits, keys KeyFunc, onReject func(Reason)) func(topic string, payload []byte) (*fedgepb.BlobRequest, string, error) {
	return func(topic string, payload []byte) (*fedgepb.BlobRequest, string, error) {
		env, err := Accept(topic, payload, l, keys)
		if err != nil {
			if onReject != nil {
				onReject(ReasonOf(err))
			}
			return nil, "", err
		}
		req, ok := env.Msg.(*fedgepb.BlobRequest)
		if !ok {
			return nil, "", fmt.Errorf("%v on a blob request topic", env.Type)
		}
		return req, env.Sender, nil
	}
}

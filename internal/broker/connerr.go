package broker

import (
	"errors"

	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"
)

// countConnErr records why a connection ended, for errors no hook sees:
// connections rejected before CONNECT, and packets over the hard size limit,
// which close the connection while being read.
func (b *Broker) countConnErr(err error) {
	if errors.Is(err, errPreAuth) {
		b.stats.preAuthRejected.Add(1)
		b.denyLog.Info("connection rejected before CONNECT", zap.Error(err))
		return
	}
	if errors.Is(err, packets.ErrPacketTooLarge) {
		b.stats.tooLargeConn.Add(1)
		b.denyLog.Warn("connection closed", zap.String("reason", "packet over size limit"),
			zap.Int("max_payload", b.cfg.MaxPayload))
	}
}

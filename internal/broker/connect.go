package broker

import (
	"errors"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"
)

// refusal is why a CONNECT is refused, which decides the CONNACK code: a
// client told "bad user name or password" when its client id is wrong would
// look for the fault in the wrong place.
type refusal int

const (
	refuseCredentials   refusal = iota + 1 // unknown user, wrong or missing password or certificate
	refuseClientID                         // a device's client id is not its device id
	refuseNotAuthorized                    // known identity, but not allowed here (fleet, will, reserved id)
)

// connectError is an authentication failure with its CONNACK class.
type connectError struct {
	kind refusal
	msg  string
}

func (e *connectError) Error() string { return e.msg }

func refuse(kind refusal, msg string) error { return &connectError{kind: kind, msg: msg} }

// connackCode is the CONNACK code of a refusal for the client's protocol
// version. MQTT 3.1.1 has its own return codes (mochi translates only some
// MQTT 5 codes, and sends the rest raw, which clients show as an unknown
// reason), so they are chosen here.
func connackCode(cl *mqtt.Client, err error) packets.Code {
	kind := refuseCredentials
	var ce *connectError
	if errors.As(err, &ce) {
		kind = ce.kind
	}
	v5 := cl.Properties.ProtocolVersion == 5
	switch kind {
	case refuseClientID:
		if v5 {
			return packets.ErrClientIdentifierNotValid
		}
		return packets.Err3ClientIdentifierNotValid // 0x02 identifier rejected
	case refuseNotAuthorized:
		if v5 {
			return packets.ErrNotAuthorized
		}
		return packets.Err3NotAuthorized // 0x05 not authorized
	}
	if v5 {
		return packets.ErrBadUsernameOrPassword
	}
	return packets.Code{Code: 0x04, Reason: "bad user name or password"}
}

// OnConnect authenticates the client and, when it is refused, sends the
// CONNACK with the code of the reason itself (OnConnectAuthenticate can
// only make mochi send one code for every refusal) and ends the
// connection.
func (h *authHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if cl.Net.Inline {
		return nil
	}
	user, id, err := h.authenticate(cl, pk)
	if err != nil {
		h.b.stats.connectsRefused.Add(1)
		code := connackCode(cl, err)
		h.b.denyLog.Warn("connection refused", zap.String("reason", err.Error()),
			zap.String("username", user), zap.String("client", cl.ID), zap.String("remote", cl.Net.Remote),
			zap.String("listener", cl.Net.Listener), zap.Uint8("connack", code.Code))
		if serr := h.srv.SendConnack(cl, code, false, nil); serr != nil {
			h.b.log.Debug("send connack", zap.String("client", cl.ID), zap.Error(serr))
		}
		return code
	}
	h.b.stats.connectsAccepted.Add(1)
	h.sessions.Store(cl.ID, &session{user: user, id: id, cl: cl})
	h.b.log.Debug("client authenticated", zap.String("username", user), zap.String("client", cl.ID),
		zap.String("remote", cl.Net.Remote))
	return nil
}

// OnConnectAuthenticate accepts exactly the connections OnConnect
// authenticated.
func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	v, ok := h.sessions.Load(cl.ID)
	return ok && v.(*session).cl == cl
}

// OnPacketRead fixes two cases where mochi would answer a client wrongly.
//
// A CONNECT with the password flag and an empty password is a protocol
// violation that mochi answers with an MQTT 5 code even to MQTT 3.1.1
// clients (shown as "unknown reason"); it is treated as a CONNECT without a
// password, which authentication then refuses as bad credentials.
//
// A PUBLISH to a topic name mochi refuses to route ($SYS/..., which clients
// may not write) is dropped by mochi without any acknowledgement, so a QoS 1
// publisher waits forever: here it gets its PUBACK (with "not authorized"
// for MQTT 5) and the publish is counted as denied. QoS 2 publishes to such
// topics, and topic names with wildcards (a protocol violation), end the
// connection instead.
func (h *authHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch pk.FixedHeader.Type {
	case packets.Connect:
		if pk.Connect.PasswordFlag && len(pk.Connect.Password) == 0 {
			pk.Connect.PasswordFlag = false
		}
	case packets.Publish:
		if cl.Net.Inline || pk.TopicName == "" || mqtt.IsValidFilter(pk.TopicName, true) {
			return pk, nil
		}
		h.b.stats.publishDenied.Add(1)
		h.b.denyLog.Warn("publish dropped", zap.String("reason", "topic name not allowed for publishing"),
			zap.String("client", cl.ID), zap.String("topic", pk.TopicName), zap.Uint8("qos", pk.FixedHeader.Qos))
		if strings.ContainsAny(pk.TopicName, "+#") || pk.FixedHeader.Qos == 2 {
			// mochi ends the connection on ErrRejectPacket only.
			return pk, packets.ErrRejectPacket
		}
		if pk.FixedHeader.Qos == 1 {
			ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID}
			if cl.Properties.ProtocolVersion == 5 {
				ack.ReasonCode = packets.ErrNotAuthorized.Code
			}
			if err := cl.WritePacket(ack); err != nil {
				return pk, err
			}
		}
	}
	return pk, nil
}

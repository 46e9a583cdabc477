package broker

import (
	"crypto/tls"
	"errors"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"

	"github.com/fedge-dev/fedge/internal/topics"
)

// deniedWillTopic replaces the will of a client whose identity was revoked
// after it connected. No identity may read it (it is outside every fleet
// root), so such a will reaches nobody.
const deniedWillTopic = "$fedge/denied-will"

// authHook authenticates clients against Credentials and enforces
// topics.Allowed on every publish, subscribe, delivery and last will.
type authHook struct {
	mqtt.HookBase
	b        *Broker
	srv      *mqtt.Server
	sessions sync.Map // client id -> *session
	buckets  sync.Map // user name -> *bucket (devices' publish rate)
}

// session is what an authenticated client id is allowed to be.
type session struct {
	user string // Credentials key (username or certificate CN)
	id   topics.Identity
	cl   *mqtt.Client // the connection that authenticated it
}

func (h *authHook) ID() string { return "fedge-auth" }

func (h *authHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnPacketRead, mqtt.OnSessionEstablish,
		mqtt.OnACLCheck, mqtt.OnPublish, mqtt.OnWill, mqtt.OnDisconnect, mqtt.OnClientExpired:
		return true
	}
	return false
}

// verifiedCN returns the common name of the client's verified TLS
// certificate, or "".
func verifiedCN(cl *mqtt.Client) string {
	tc, ok := cl.Net.Conn.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return ""
	}
	st := tc.ConnectionState()
	if len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return ""
	}
	return st.VerifiedChains[0][0].Subject.CommonName
}

// authenticate decides a CONNECT. With a verified client certificate the CN
// names the Credentials entry (a username, if sent, must equal it, and a
// password, if sent, must be right); otherwise username and password must
// match an entry made by Add. A device's client id must equal its device id
// so that it cannot take over another device's session, its id may not
// collide with a service identity (topics.ValidateDeviceID: a device named
// like the coordinator's client id would take over the coordinator's
// session), and its will must pass the ACL (retained only where
// topics.RetainAllowed allows).
func (h *authHook) authenticate(cl *mqtt.Client, pk packets.Packet) (string, topics.Identity, error) {
	user := string(pk.Connect.Username)
	var id topics.Identity
	if cn := verifiedCN(cl); cn != "" {
		if user != "" && user != cn {
			return user, id, refuse(refuseCredentials, "username differs from certificate common name")
		}
		user = cn
		cr, ok := h.b.creds.lookup(cn)
		if !ok {
			return user, id, refuse(refuseCredentials, "unknown certificate common name")
		}
		if pk.Connect.PasswordFlag && len(pk.Connect.Password) > 0 {
			if _, err := h.b.creds.verifyPassword(cn, pk.Connect.Password); err != nil {
				return user, id, err
			}
		}
		id = cr.id
	} else {
		if user == "" {
			return user, id, refuse(refuseCredentials, "no username and no client certificate")
		}
		var err error
		if id, err = h.b.creds.verifyPassword(user, pk.Connect.Password); err != nil {
			return user, id, err
		}
	}
	if id.Fleet != h.b.cfg.Fleet {
		return user, id, refuse(refuseNotAuthorized, "identity belongs to another fleet")
	}
	if id.Role == topics.RoleDevice {
		if err := topics.ValidateDeviceID(id.ID); err != nil {
			return user, id, refuse(refuseNotAuthorized, err.Error())
		}
		if cl.ID != id.ID {
			return user, id, refuse(refuseClientID, "device client id must equal its device id")
		}
	}
	if pk.Connect.WillFlag && !topics.Allowed(id, topics.Publish, pk.Connect.WillTopic) {
		h.b.stats.willDenied.Add(1)
		return user, id, refuse(refuseNotAuthorized, "last will topic not allowed")
	}
	if pk.Connect.WillFlag && pk.Connect.WillRetain && !topics.RetainAllowed(id, pk.Connect.WillTopic) {
		h.b.stats.willDenied.Add(1)
		return user, id, refuse(refuseNotAuthorized, "retained last will not allowed")
	}
	return user, id, nil
}

// takeOverTimeout bounds the wait for a replaced connection to wind down.
const takeOverTimeout = 5 * time.Second

// OnSessionEstablish ends a still-open earlier connection with the same
// client id, and waits for its goroutine to finish, before mochi takes the
// session over. mochi v2.7.9's own take-over races with the old
// connection's clean-up, which can remove the new client from the client
// list (it then receives nothing while appearing connected); after this the
// old connection is an ordinary disconnected session when mochi looks at it.
// As in any take-over, the old connection's will is sent.
func (h *authHook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	old, ok := h.srv.Clients.Get(cl.ID)
	if !ok || old == cl || old.Net.Conn == nil {
		return
	}
	done, ok := h.b.connDone(old.Net.Conn)
	old.Stop(packets.ErrSessionTakenOver)
	if !ok {
		return
	}
	select {
	case <-done:
	case <-time.After(takeOverTimeout):
		h.b.log.Warn("replaced connection did not close in time", zap.String("client", cl.ID),
			zap.String("old_remote", old.Net.Remote))
	}
}

// identity returns the identity of a client if its credentials still exist.
func (h *authHook) identity(cl *mqtt.Client) (topics.Identity, bool) {
	_, id, ok := h.sessionIdentity(cl)
	return id, ok
}

// sessionIdentity is identity with the user name it authenticated as.
func (h *authHook) sessionIdentity(cl *mqtt.Client) (string, topics.Identity, bool) {
	v, ok := h.sessions.Load(cl.ID)
	if !ok {
		return "", topics.Identity{}, false
	}
	s := v.(*session)
	if cur, ok := h.b.creds.Lookup(s.user); !ok || cur != s.id {
		return "", topics.Identity{}, false
	}
	return s.user, s.id, true
}

// OnACLCheck authorizes subscriptions (write=false with a filter) and
// deliveries (write=false with a topic name). Publishes (write=true) are
// checked in OnPublish instead, because mochi disconnects an MQTT 3.1.1
// client whose publish fails here: a client with a persistent session would
// then resend the denied message after every reconnect, forever. Dropping it
// after the PUBACK is what Mosquitto does too.
func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if write {
		return true
	}
	id, ok := h.identity(cl)
	if ok && topics.Allowed(id, topics.Subscribe, topic) {
		return true
	}
	h.b.stats.subscribeDenied.Add(1)
	h.b.denyLog.Warn("subscribe or read denied", zap.String("reason", denyReason(ok)),
		zap.String("client", cl.ID), zap.String("topic", topic))
	return false
}

func denyReason(known bool) string {
	if !known {
		return "client credentials revoked or unknown"
	}
	return "topic not allowed for identity"
}

// OnPublish drops publishes over the payload limit, outside the client's
// ACL, over a device's publish rate, or retained where a device may not
// retain (limitPublish). MQTT 3.1.1 clients still get their PUBACK (they cannot be told
// otherwise without being disconnected); MQTT 5 clients get a PUBACK with
// the reason code.
func (h *authHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	if len(pk.Payload) > h.b.cfg.MaxPayload {
		h.b.stats.oversized.Add(1)
		h.b.denyLog.Warn("publish dropped", zap.String("reason", "payload over limit"),
			zap.String("client", cl.ID), zap.String("topic", pk.TopicName),
			zap.Int("payload_len", len(pk.Payload)), zap.Int("limit", h.b.cfg.MaxPayload))
		return pk, rejectCode(cl, pk, packets.ErrPacketTooLarge)
	}
	user, id, ok := h.sessionIdentity(cl)
	if !ok || !topics.Allowed(id, topics.Publish, pk.TopicName) {
		h.b.stats.publishDenied.Add(1)
		h.b.denyLog.Warn("publish dropped", zap.String("reason", denyReason(ok)),
			zap.String("client", cl.ID), zap.String("topic", pk.TopicName))
		return pk, rejectCode(cl, pk, packets.ErrNotAuthorized)
	}
	return pk, h.limitPublish(cl, user, id, pk)
}

// rejectCode is the OnPublish error that makes mochi drop a packet: MQTT 5
// QoS>0 publishes are answered with code; everything else is acknowledged
// and ignored (any other error would let an MQTT 3.1.1 publish through).
func rejectCode(cl *mqtt.Client, pk packets.Packet, code packets.Code) error {
	if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos > 0 {
		return code
	}
	return packets.CodeSuccessIgnore
}

// OnWill re-checks the will against the ACL when it is sent: the identity may
// have been revoked since CONNECT, where the will was checked first.
func (h *authHook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	id, ok := h.identity(cl)
	if ok && topics.Allowed(id, topics.Publish, will.TopicName) {
		return will, nil
	}
	h.b.stats.willDenied.Add(1)
	h.b.denyLog.Warn("last will dropped", zap.String("reason", denyReason(ok)),
		zap.String("client", cl.ID), zap.String("topic", will.TopicName))
	return mqtt.Will{TopicName: deniedWillTopic, Flag: will.Flag}, nil
}

func (h *authHook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	if err != nil && !errors.Is(err, packets.CodeDisconnect) {
		h.b.log.Debug("client disconnected", zap.String("client", cl.ID), zap.Error(err))
	}
	if expire && !cl.IsTakenOver() {
		h.forget(cl)
	}
}

func (h *authHook) OnClientExpired(cl *mqtt.Client) { h.forget(cl) }

// forget drops the session of cl unless a newer connection replaced it.
func (h *authHook) forget(cl *mqtt.Client) {
	if v, ok := h.sessions.Load(cl.ID); ok && v.(*session).cl == cl {
		h.sessions.CompareAndDelete(cl.ID, v)
	}
}

// sessionCount is the number of client ids with a live session.
func (h *authHook) sessionCount() int {
	n := 0
	h.sessions.Range(func(any, any) bool { n++; return true })
	return n
}

package embedded

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
)

// Identities a fleet certificate names in a URI SAN.
const (
	ControlPlaneURI = "avatarfleet://controlplane"
	WorkerURIPrefix = "avatarfleet://worker/"
)

// ControlPlaneUser is the NATS user name of control planes.
const ControlPlaneUser = "controlplane"

// WorkerUser is the NATS user name of worker id.
func WorkerUser(id string) string { return "worker/" + id }

// ControlPlanePermissions are what a control plane may do on NATS: publish
// every lifecycle event and health request, use the JetStream API (the
// events stream and its consumers), acknowledge the events its durable
// consumers (webhooks) deliver, and receive replies on its inboxes.
func ControlPlanePermissions() *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			"avatarfleet.>",
			"$JS.API.>",
			"$JS.ACK." + fleetbus.StreamName + ".>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			"_INBOX.>",
			"avatarfleet.>",
		}},
	}
}

// WorkerPermissions are what worker id may do on NATS: publish its own
// events (fleetbus.WorkerSubject, fleetbus.WorkerSessionsAll), look up or
// create the events stream, answer its health requests (responses only, to
// whoever asked), and receive replies on its own inboxes
// (fleetbus.WorkerInboxPrefix). It cannot publish another worker's or a
// control plane's subjects, nor read anyone's events.
func WorkerPermissions(id string) *server.Permissions {
	svc := fleetbus.HealthServiceName
	sub := []string{fleetbus.HealthSubject(id), fleetbus.WorkerInboxPrefix(id) + ".>"}
	// The discovery subjects of the NATS micro service the health check runs.
	for _, verb := range []string{"PING", "INFO", "STATS"} {
		sub = append(sub, "$SRV."+verb, "$SRV."+verb+"."+svc, "$SRV."+verb+"."+svc+".*")
	}
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			fleetbus.WorkerSubject(id),
			fleetbus.WorkerSessionsAll(id),
			"$JS.API.STREAM.INFO." + fleetbus.StreamName,
			"$JS.API.STREAM.CREATE." + fleetbus.StreamName,
		}},
		Subscribe: &server.SubjectPermission{Allow: sub},
		Response:  &server.ResponsePermission{MaxMsgs: 1, Expires: time.Minute},
	}
}

// NATSUser is a user of an embedded NATS server.
type NATSUser struct {
	Name, Password string
	// Permissions bound the user (nil: everything).
	Permissions *server.Permissions
}

// NATSAuth makes an embedded NATS server refuse anonymous clients and bind
// each client to a role's permissions. A client that sends a user name is
// checked against Users, then against the worker passwords WorkerSecret
// derives; one that sends none is checked for a fleet certificate.
type NATSAuth struct {
	// Users log in with a name and a password.
	Users []NATSUser
	// WorkerSecret, when set, lets worker <id> log in as WorkerUser(id)
	// with WorkerPassword(WorkerSecret, id), bound by WorkerPermissions(id):
	// one secret serves any number of workers.
	WorkerSecret []byte
	// MapCertificates lets a client log in with a verified client
	// certificate (the server's TLS must verify them: ClientCAs and a
	// ClientAuth that verifies) carrying the URI SAN ControlPlaneURI
	// (control-plane permissions) or WorkerURIPrefix+<id> (that worker's).
	MapCertificates bool
}

// WorkerPassword is worker id's password under secret.
func WorkerPassword(secret []byte, id string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("avatarfleet nats worker\x00" + id))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// natsAuthenticator is the server's CustomClientAuthentication.
type natsAuthenticator struct{ auth NATSAuth }

// Check implements server.Authentication.
func (a natsAuthenticator) Check(c server.ClientAuthentication) bool {
	if c.Kind() != server.CLIENT {
		return false
	}
	o := c.GetOpts()
	if o.Username != "" {
		for _, u := range a.auth.Users {
			if o.Username == u.Name && equal(o.Password, u.Password) {
				c.RegisterUser(&server.User{Username: u.Name, Permissions: u.Permissions})
				return true
			}
		}
		if id, ok := strings.CutPrefix(o.Username, WorkerUser("")); ok && len(a.auth.WorkerSecret) > 0 && validWorkerID(id) &&
			equal(o.Password, WorkerPassword(a.auth.WorkerSecret, id)) {
			c.RegisterUser(&server.User{Username: o.Username, Permissions: WorkerPermissions(id)})
			return true
		}
		return false
	}
	if !a.auth.MapCertificates {
		return false
	}
	role, id, ok := CertificateIdentity(c.GetTLSConnectionState())
	switch {
	case !ok:
		return false
	case role == ControlPlaneURI:
		c.RegisterUser(&server.User{Username: ControlPlaneUser, Permissions: ControlPlanePermissions()})
	default:
		c.RegisterUser(&server.User{Username: WorkerUser(id), Permissions: WorkerPermissions(id)})
	}
	return true
}

// CertificateIdentity is the fleet identity of a verified TLS peer: role
// ControlPlaneURI, or WorkerURIPrefix with the worker's id. ok is false
// when the peer sent no certificate, it was not verified, or it names no
// fleet identity (or more than one).
func CertificateIdentity(cs *tls.ConnectionState) (role, id string, ok bool) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return "", "", false
	}
	return certIdentity(cs.PeerCertificates[0])
}

func certIdentity(cert *x509.Certificate) (role, id string, ok bool) {
	n := 0
	for _, u := range cert.URIs {
		s := u.String()
		switch {
		case s == ControlPlaneURI:
			role, id = ControlPlaneURI, ""
			n++
		case strings.HasPrefix(s, WorkerURIPrefix) && validWorkerID(strings.TrimPrefix(s, WorkerURIPrefix)):
			role, id = WorkerURIPrefix, strings.TrimPrefix(s, WorkerURIPrefix)
			n++
		}
	}
	return role, id, n == 1
}

// validWorkerID accepts the fleet's names (fleetstore.ValidName's alphabet).
func validWorkerID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i, r := range id {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || !strings.ContainsRune("_.-", r)) {
			return false
		}
	}
	return true
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// Package fleetpki is the public-key infrastructure of the links between
// control planes and workers: a fleet CA, the certificates it issues, and
// the TLS configurations that enforce who may talk to whom.
//
// Identities are URI SANs. A control plane's certificate names
// avatarfleet://controlplane; a worker's names avatarfleet://worker/<id>
// plus the DNS names and IP addresses it is dialled at. A worker accepts
// only clients whose certificate chains to the fleet CA and names a control
// plane; a control plane accepts a worker only when its certificate chains
// to the CA, covers the dialled host and names the id of the worker it
// meant to reach.
//
// Keys are ECDSA P-256, from the standard library only. Errors name files
// and identities, never command-line flags.
package fleetpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// URI SANs of the fleet's identities.
const (
	// ControlPlaneURI names a control plane.
	ControlPlaneURI = "avatarfleet://controlplane"
	// workerURIPrefix followed by a worker id names that worker.
	workerURIPrefix = "avatarfleet://worker/"
)

// Validities of what this package issues.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultCertValidity = 2 * 365 * 24 * time.Hour
	// backdate covers clocks a little behind the issuer's.
	backdate = 5 * time.Minute
)

// WorkerURI is the URI SAN naming worker id.
func WorkerURI(id string) string { return workerURIPrefix + id }

// CA is a certificate authority: its certificate and private key.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA makes a self-signed CA named name, valid for validity (0 →
// DefaultCAValidity).
func NewCA(name string, validity time.Duration) (*CA, error) {
	if validity == 0 {
		validity = DefaultCAValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"AvatarFleet"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCA reads a CA certificate and its key from PEM files.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA %s: %w", certFile, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("CA %s: key is %T, want ECDSA", certFile, pair.PrivateKey)
	}
	cert := pair.Leaf
	if cert == nil {
		if cert, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("CA %s: %w", certFile, err)
		}
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate", certFile)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// CertPEM is the CA certificate in PEM.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// Pool is a pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// WriteFiles writes the CA as ca.crt and ca.key (owner-only) into dir.
func (ca *CA) WriteFiles(dir string) error {
	keyPEM, err := encodeKey(ca.Key)
	if err != nil {
		return err
	}
	return writePair(dir, "ca", ca.CertPEM(), keyPEM)
}

// Request describes a certificate to issue: a control plane's, or worker
// WorkerID's; Hosts are DNS names or IP addresses it is reached at.
type Request struct {
	ControlPlane bool
	WorkerID     string
	Hosts        []string
	// Validity is the lifetime (0 → DefaultCertValidity).
	Validity time.Duration
}

// Issued is a certificate with its private key, in PEM.
type Issued struct {
	CertPEM, KeyPEM []byte
}

// Issue signs a certificate for req.
func (ca *CA) Issue(req Request) (*Issued, error) {
	if req.ControlPlane == (req.WorkerID != "") {
		return nil, errors.New("issue: want a control-plane certificate or a worker id, exactly one")
	}
	uri, cn := ControlPlaneURI, "controlplane"
	if req.WorkerID != "" {
		if strings.ContainsAny(req.WorkerID, "/?#% ") {
			return nil, fmt.Errorf("issue: worker id %q is not a valid name", req.WorkerID)
		}
		uri, cn = WorkerURI(req.WorkerID), "worker "+req.WorkerID
	}
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	validity := req.Validity
	if validity == 0 {
		validity = DefaultCertValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"AvatarFleet"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		// Both usages: a control plane is a client of workers, a worker a
		// server; either may also present it to etcd or NATS.
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{u},
	}
	for _, h := range req.Hosts {
		h = strings.TrimSpace(h)
		switch ip := net.ParseIP(h); {
		case h == "":
		case ip != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", uri, err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &Issued{CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), KeyPEM: keyPEM}, nil
}

// WriteFiles writes the certificate and key as <name>.crt and <name>.key
// (owner-only) into dir.
func (is *Issued) WriteFiles(dir, name string) error {
	return writePair(dir, name, is.CertPEM, is.KeyPEM)
}

// Identity is the certificate with its key, for a tls.Config.
func (is *Issued) Identity() (tls.Certificate, error) {
	return tls.X509KeyPair(is.CertPEM, is.KeyPEM)
}

// Files names the PEM files of one party: the fleet CA's certificate, and
// the party's certificate and key.
type Files struct {
	CA, Cert, Key string
}

// Set reports whether any file is named.
func (f Files) Set() bool { return f.CA != "" || f.Cert != "" || f.Key != "" }

// Validate checks that all three files are named and exist.
func (f Files) Validate() error {
	if f.CA == "" || f.Cert == "" || f.Key == "" {
		return errors.New("fleet TLS needs the CA certificate, a certificate and its key")
	}
	for _, p := range []string{f.CA, f.Cert, f.Key} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("fleet TLS: %w", err)
		}
	}
	return nil
}

// Load reads the files.
func (f Files) Load() (*Material, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("read fleet CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("fleet CA %s: no PEM certificate", f.CA)
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("fleet certificate %s: %w", f.Cert, err)
	}
	return &Material{Roots: roots, Cert: cert}, nil
}

// Material is what a party needs for fleet TLS: the CA pool it trusts and
// its own certificate.
type Material struct {
	Roots *x509.CertPool
	Cert  tls.Certificate
}

// NewMaterial is the material of a certificate issued by ca.
func NewMaterial(ca *CA, is *Issued) (*Material, error) {
	cert, err := is.Identity()
	if err != nil {
		return nil, err
	}
	return &Material{Roots: ca.Pool(), Cert: cert}, nil
}

// URIs are the URI SANs of the material's own certificate.
func (m *Material) URIs() ([]string, error) {
	leaf, err := x509.ParseCertificate(m.Cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parse own certificate: %w", err)
	}
	return uriStrings(leaf), nil
}

// Names reports an error unless the material's own certificate names
// identity (ControlPlaneURI or WorkerURI(id)): a party given another's
// certificate fails at start, not at its first call.
func (m *Material) Names(identity string) error {
	leaf, err := x509.ParseCertificate(m.Cert.Certificate[0])
	if err != nil {
		return fmt.Errorf("parse own certificate: %w", err)
	}
	return RequireURI(leaf, identity)
}

// WorkerServer is a worker's gRPC server TLS: the client must present a
// certificate that chains to the fleet CA and names a control plane.
func (m *Material) WorkerServer() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{m.Cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    m.Roots,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("fleet TLS: client presented no certificate")
			}
			return RequireURI(cs.PeerCertificates[0], ControlPlaneURI)
		},
	}
}

// ControlPlaneClient is a control plane's TLS towards worker workerID:
// the worker's certificate must chain to the fleet CA, cover the dialled
// host (the standard DNS/IP check, on the name gRPC dials), and name
// workerID.
func (m *Material) ControlPlaneClient(workerID string) *tls.Config {
	want := WorkerURI(workerID)
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{m.Cert},
		RootCAs:      m.Roots,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("fleet TLS: worker presented no certificate")
			}
			return RequireURI(cs.PeerCertificates[0], want)
		},
	}
}

// RequireURI is an error unless cert carries the URI SAN want.
func RequireURI(cert *x509.Certificate, want string) error {
	got := uriStrings(cert)
	if slices.Contains(got, want) {
		return nil
	}
	if len(got) == 0 {
		return fmt.Errorf("fleet TLS: peer certificate %q names no fleet identity, want %s", cert.Subject.CommonName, want)
	}
	return fmt.Errorf("fleet TLS: peer certificate names %s, want %s", strings.Join(got, ", "), want)
}

func uriStrings(cert *x509.Certificate) []string {
	out := make([]string, 0, len(cert.URIs))
	for _, u := range cert.URIs {
		out = append(out, u.String())
	}
	return out
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n, nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// writePair writes <name>.crt (0644) and <name>.key (0600) into dir,
// making dir owner-only if it does not exist.
func writePair(dir, name string, certPEM, keyPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("certificate dir: %w", err)
	}
	if err := writeFile(filepath.Join(dir, name+".key"), keyPEM, 0o600); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, name+".crt"), certPEM, 0o644)
}

// writeFile writes through a temporary file and a rename, so a reader never
// sees half a file.
func writeFile(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

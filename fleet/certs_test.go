package fleet

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA is a CA made for one test, and what it signs.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "snapvol test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue signs a leaf certificate: a server's for 127.0.0.1 or a client's.
func (ca *testCA) issue(t *testing.T, client bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "snapvol test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	if client {
		tmpl.ExtKeyUsage, tmpl.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: k})
}

func writeFiles(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// REGISTRY_CONFIG/certs.d/HOST comes first, Docker's certs.d after it,
// one directory per registry; with neither, the one to create is named.
func TestCertsDirPrecedence(t *testing.T) {
	old := DockerCertsDir
	DockerCertsDir = filepath.Join(t.TempDir(), "etc-docker-certs.d")
	t.Cleanup(func() { DockerCertsDir = old })
	config := t.TempDir()
	const reg = "registry.example.com:5000"

	if dir, ok := certsDir(config, reg); ok || dir != filepath.Join(config, "certs.d", reg) {
		t.Fatalf("no certs.d anywhere: %s %v; want REGISTRY_CONFIG's, not existing", dir, ok)
	}
	if dir, ok := certsDir("", reg); ok || dir != filepath.Join(DockerCertsDir, reg) {
		t.Fatalf("no certs.d, no REGISTRY_CONFIG: %s %v; want Docker's, not existing", dir, ok)
	}
	writeFiles(t, filepath.Join(DockerCertsDir, reg), nil)
	if dir, ok := certsDir(config, reg); !ok || dir != filepath.Join(DockerCertsDir, reg) {
		t.Fatalf("Docker's certs.d only: %s %v", dir, ok)
	}
	writeFiles(t, filepath.Join(config, "certs.d", reg), nil)
	if dir, ok := certsDir(config, reg); !ok || dir != filepath.Join(config, "certs.d", reg) {
		t.Fatalf("both: %s %v; want REGISTRY_CONFIG's", dir, ok)
	}
	// Another registry's directory is not this one's.
	if dir, ok := certsDir(config, "other.example.com"); ok {
		t.Fatalf("another registry: %s found", dir)
	}
	for _, bad := range []string{"", ".", "..", "a/b", `a\b`} {
		if dir, ok := certsDir(config, bad); ok || dir != "" {
			t.Errorf("registry %q: certs.d %q %v; want none", bad, dir, ok)
		}
	}
}

func TestReadCertsDir(t *testing.T) {
	ca := newTestCA(t)
	clientCert, clientKey := ca.issue(t, true)
	const reg = "127.0.0.1:5000"

	dir := filepath.Join(t.TempDir(), reg)
	writeFiles(t, dir, map[string][]byte{"ca.crt": ca.pem, "client.cert": clientCert, "client.key": clientKey, "README": []byte("not read")})
	roots, certs, sum, err := readCertsDir(reg, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 1 || sum == "" {
		t.Fatalf("client certificates %d, sum %q; want 1", len(certs), sum)
	}
	leaf, _ := ca.issue(t, false)
	b, _ := pem.Decode(leaf)
	lc, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lc.Verify(x509.VerifyOptions{Roots: roots}); err != nil {
		t.Fatalf("a certificate the CA of ca.crt signed does not verify with the roots read: %v", err)
	}
	// Another content, another sum (the cached transport is replaced).
	writeFiles(t, dir, map[string][]byte{"ca.crt": append(append([]byte{}, ca.pem...), newTestCA(t).pem...)})
	if _, _, sum2, err := readCertsDir(reg, dir); err != nil || sum2 == sum {
		t.Fatalf("a changed ca.crt: %v, sum unchanged %v", err, sum2 == sum)
	}

	if roots, certs, sum, err := readCertsDir(reg, filepath.Join(t.TempDir(), "none")); err != nil || roots != nil || certs != nil || sum != "" {
		t.Fatalf("a missing directory: %v %v %v; want nothing and no error", roots, certs, err)
	}

	for _, c := range []struct {
		name  string
		files map[string][]byte
		file  string
		want  string
	}{
		{"not PEM", map[string][]byte{"ca.crt": []byte("hello")}, "ca.crt", "not a PEM CA certificate"},
		{"a key in a .crt", map[string][]byte{"ca.crt": clientKey}, "ca.crt", "EC PRIVATE KEY block"},
		{"a broken certificate", map[string][]byte{"ca.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})}, "ca.crt", "certificate 1"},
		{"a cert without its key", map[string][]byte{"client.cert": clientCert}, "client.cert", "put its private key in " + filepath.Join("DIR", "client.key")},
		{"a key without its cert", map[string][]byte{"client.key": clientKey}, "client.key", "put the certificate in " + filepath.Join("DIR", "client.cert")},
		{"a mismatched pair", map[string][]byte{"client.cert": clientCert, "client.key": func() []byte { _, k := ca.issue(t, true); return k }()}, "client.cert", "not a PEM client certificate matching"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), reg)
			writeFiles(t, dir, c.files)
			_, _, _, err := readCertsDir(reg, dir)
			var ce *certsError
			if !errors.As(err, &ce) {
				t.Fatalf("%v; want a certsError", err)
			}
			msg := err.Error()
			want := strings.ReplaceAll(c.want, "DIR", dir)
			if !strings.Contains(msg, "registry "+reg) || !strings.Contains(msg, filepath.Join(dir, c.file)) || !strings.Contains(msg, want) {
				t.Fatalf("%s\nwant the registry, %s and %q", msg, filepath.Join(dir, c.file), want)
			}
		})
	}
}

// A TLS server on loopback signed by a test CA, requiring a client
// certificate: without certs.d the failure names the registry and where
// ca.crt goes; with ca.crt and no client certificate, where client.cert
// goes; with both it answers. A plain HTTP server on loopback is found
// plain; a TLS one is not.
func TestRegistryTransportTLS(t *testing.T) {
	old := DockerCertsDir
	DockerCertsDir = filepath.Join(t.TempDir(), "etc-docker-certs.d")
	t.Cleanup(func() { DockerCertsDir = old })
	ca := newTestCA(t)
	serverCert, serverKey := ca.issue(t, false)
	pair, err := tls.X509KeyPair(serverCert, serverKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	// The refused handshakes are the point, not news for the test log.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	reg := strings.TrimPrefix(srv.URL, "https://")
	config := t.TempDir()
	dir := filepath.Join(config, "certs.d", reg)

	get := func() error {
		rt, _, err := registryTransport(config, reg)
		if err != nil {
			return err
		}
		if loopbackPlain(context.Background(), rt, reg) {
			t.Fatal("a TLS registry was found plain HTTP")
		}
		resp, err := (&http.Client{Transport: rt}).Get("https://" + reg + "/v2/")
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	err = get()
	var te *tlsError
	if !errors.As(err, &te) || te.kind != "untrusted" || !strings.Contains(err.Error(), reg) || !strings.Contains(err.Error(), filepath.Join(dir, "ca.crt")) {
		t.Fatalf("no certs.d: %v; want the registry and %s named", err, filepath.Join(dir, "ca.crt"))
	}
	writeFiles(t, dir, map[string][]byte{"ca.crt": ca.pem})
	err = get()
	if !errors.As(err, &te) || te.kind != "refused" || !strings.Contains(err.Error(), filepath.Join(dir, "client.cert")) {
		t.Fatalf("no client certificate: %v; want %s named", err, filepath.Join(dir, "client.cert"))
	}
	cert, key := ca.issue(t, true)
	writeFiles(t, dir, map[string][]byte{"client.cert": cert, "client.key": key})
	if err := get(); err != nil {
		t.Fatalf("with ca.crt and client.cert: %v", err)
	}
	// A certs.d mistake stops the request before any connection.
	writeFiles(t, dir, map[string][]byte{"other.key": key})
	if err := get(); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "other.key")) {
		t.Fatalf("a key without its cert: %v", err)
	}

	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(plain.Close)
	preg := strings.TrimPrefix(plain.URL, "http://")
	rt, _, err := registryTransport(config, preg)
	if err != nil {
		t.Fatal(err)
	}
	if !loopbackPlain(context.Background(), rt, preg) {
		t.Fatal("a plain HTTP registry on loopback was not found plain")
	}
	_, err = (&http.Client{Transport: rt}).Get("https://" + preg + "/v2/")
	if !errors.As(err, &te) || te.kind != "plain" || !strings.Contains(err.Error(), "only to loopback") {
		t.Fatalf("HTTPS to a plain HTTP server: %v; want the plain HTTP refusal", err)
	}
}

// openRepo speaks plain HTTP only to a loopback registry that answers
// plain HTTP; a loopback TLS registry and any other host get HTTPS (a
// host not on loopback is never asked: registry.example.com is not
// resolved here).
func TestOpenRepoPlainHTTPOnlyToLoopbackThatAnswersIt(t *testing.T) {
	config := t.TempDir()
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(plain.Close)
	secure := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	secure.Config.ErrorLog = log.New(io.Discard, "", 0)
	t.Cleanup(secure.Close)
	for _, c := range []struct {
		registry string
		plain    bool
	}{
		{strings.TrimPrefix(plain.URL, "http://"), true},
		{strings.TrimPrefix(secure.URL, "https://"), false},
		{"registry.example.com", false},
		{"registry.example.com:5000", false},
	} {
		r, err := openRepo(context.Background(), Repo{Registry: c.registry, Path: "data/app-production"}, config)
		if err != nil {
			t.Fatal(err)
		}
		if r.PlainHTTP != c.plain {
			t.Errorf("%s: PlainHTTP %v, want %v", c.registry, r.PlainHTTP, c.plain)
		}
	}
}

package test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tlsFiles are the PEM files of a CA a test makes and what it signed: a
// server certificate for 127.0.0.1 and a client certificate, as the
// operator's files the docs/fleets.md blocks copy (/root/company-ca.crt,
// /root/ci-host.cert, /root/ci-host.key).
type tlsFiles struct {
	dir                                              string
	ca, serverCert, serverKey, clientCert, clientKey string
	client                                           *http.Client // trusts the CA, offers the client certificate
}

func makeTLSFiles(t *testing.T) tlsFiles {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "snapvol test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leaf := func(serial int64, usage x509.ExtKeyUsage, ips []net.IP, certName, keyName string) (string, string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "snapvol test " + certName},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		k, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return write(certName, "CERTIFICATE", der), write(keyName, "EC PRIVATE KEY", k)
	}
	f := tlsFiles{dir: dir, ca: write("company-ca.crt", "CERTIFICATE", caDER)}
	f.serverCert, f.serverKey = leaf(2, x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)}, "server.crt", "server.key")
	f.clientCert, f.clientKey = leaf(3, x509.ExtKeyUsageClientAuth, nil, "ci-host.cert", "ci-host.key")
	pair, err := tls.LoadX509KeyPair(f.clientCert, f.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	f.client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
	return f
}

// runTLSBlock runs a docs/fleets.md certs.d block for registry reg with
// REGISTRY_CONFIG config and the operator's files in files.dir.
func runTLSBlock(t *testing.T, name, reg, config string, files tlsFiles) {
	t.Helper()
	for _, line := range docBlock(t, "host", name).Commands() {
		line = strings.ReplaceAll(line, "registry.example.com", reg)
		line = strings.ReplaceAll(line, "/var/lib/snapvol/registry", config)
		line = strings.ReplaceAll(line, "/root/", files.dir+"/")
		if out, err := exec.Command("sh", "-ec", line).CombinedOutput(); err != nil {
			t.Fatalf("docs/fleets.md %s: %s: %v\n%s", name, line, err, out)
		}
	}
}

// A registry signed by a private CA, on loopback and so spoken to in
// HTTPS as Docker first does (the host's roots do not know the CA): a
// push and a pull are refused naming the registry and the certs.d path
// of ca.crt until the docs/fleets.md block puts the CA there, then work.
// A registry that requires a client certificate is refused naming
// client.cert's path until the client block puts this host's there. A
// key without its certificate is refused naming the file.
func TestFleetTLS(t *testing.T) {
	files := makeTLSFiles(t)
	reg := StartRegistryTLS(t, RegistryTLS{Cert: files.serverCert, Key: files.serverKey}, files.client)
	repo := reg + "/data/app-production"
	prodConfig, ciConfig := t.TempDir(), t.TempDir()

	prod := StartPlugin(t, map[string]string{"PUBLISH": "app-production@masked", "REGISTRY_CONFIG": prodConfig})
	SeedProduction(t, prod)
	writeMarker(t, prod, "app-production", "v1")
	adminCLI(t, prod, "snapshot", "create", "app-production", "masked")

	caPath := filepath.Join(prodConfig, "certs.d", reg, "ca.crt")
	_, out, err := push(t, prod, nil, "app-production@masked", repo)
	if err == nil || !strings.Contains(out, "registry "+reg) || !strings.Contains(out, caPath) {
		t.Fatalf("push to a registry of an unknown CA: %v\n%s; want an error naming %s and %s", err, out, reg, caPath)
	}
	t.Logf("no ca.crt: %s", out)
	runTLSBlock(t, "fleet-tls-ca", reg, prodConfig, files)
	if _, out, err := push(t, prod, nil, "app-production@masked", repo); err != nil {
		t.Fatalf("push with the CA in %s: %v\n%s", caPath, err, out)
	}

	ci := StartPlugin(t, map[string]string{"REPLICAS": "app-production=" + repo, "PULL_EVERY": "0", "REGISTRY_CONFIG": ciConfig})
	ciCA := filepath.Join(ciConfig, "certs.d", reg, "ca.crt")
	out, err = cli(t, nil, "--state-dir", ci.StateDir, "pull", "app-production@masked")
	if err == nil || !strings.Contains(out, repo) || !strings.Contains(out, ciCA) {
		t.Fatalf("pull from a registry of an unknown CA: %v\n%s; want an error naming %s and %s", err, out, repo, ciCA)
	}
	runTLSBlock(t, "fleet-tls-ca", reg, ciConfig, files)
	adminCLI(t, ci, "pull", "app-production@masked")
	mp := ci.MustMount("app-production@masked+job", "job")
	if got := readMarker(t, mp); got != "v1" {
		t.Fatalf("the CI clone sees %q; want v1", got)
	}
	if err := ci.Unmount("app-production@masked+job", "job"); err != nil {
		t.Fatal(err)
	}

	// A registry that requires a client certificate signed by the CA.
	mtls := StartRegistryTLS(t, RegistryTLS{Cert: files.serverCert, Key: files.serverKey, ClientCAs: files.ca}, files.client)
	mrepo := mtls + "/data/app-production"
	runTLSBlock(t, "fleet-tls-ca", mtls, prodConfig, files)
	certPath := filepath.Join(prodConfig, "certs.d", mtls, "client.cert")
	_, out, err = push(t, prod, nil, "app-production@masked", mrepo)
	if err == nil || !strings.Contains(out, "registry "+mtls) || !strings.Contains(out, certPath) {
		t.Fatalf("push without a client certificate: %v\n%s; want an error naming %s and %s", err, out, mtls, certPath)
	}
	t.Logf("no client certificate: %s", out)
	// A key without its certificate: named, nothing sent.
	stray := filepath.Join(prodConfig, "certs.d", mtls, "client.key")
	if err := os.WriteFile(stray, mustRead(t, files.clientKey), 0o600); err != nil {
		t.Fatal(err)
	}
	_, out, err = push(t, prod, nil, "app-production@masked", mrepo)
	if err == nil || !strings.Contains(out, stray) || !strings.Contains(out, certPath) {
		t.Fatalf("push with a key and no certificate: %v\n%s; want an error naming %s and %s", err, out, stray, certPath)
	}
	runTLSBlock(t, "fleet-tls-client", mtls, prodConfig, files)
	if _, out, err := push(t, prod, nil, "app-production@masked", mrepo); err != nil {
		t.Fatalf("push with the client certificate: %v\n%s", err, out)
	}
}

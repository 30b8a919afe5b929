package fleet

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// DockerCertsDir is where Docker reads a registry's private CA and client
// certificates, one directory per registry host[:port] (its certs.d). A
// variable so the unit tests, which run without root, can point it
// elsewhere.
var DockerCertsDir = "/etc/docker/certs.d"

// certsDir is the certs.d directory read for registry (HOST[:PORT], as
// the repository names it), and whether it exists. Precedence, one
// directory per registry and never a mix of two:
//
//   - REGISTRY_CONFIG/certs.d/HOST when REGISTRY_CONFIG is set and that
//     directory exists: the one the managed plugin can see (it sees the
//     host only through /var/lib/snapvol), and a host-mode operator's way
//     to trust a CA for snapvol alone;
//   - else DockerCertsDir/HOST, Docker's own, when it exists.
//
// When neither exists, dir is where the operator should put one: under
// REGISTRY_CONFIG when it is set, else Docker's.
func certsDir(configDir, registry string) (dir string, exists bool) {
	if registry == "" || registry == "." || registry == ".." || strings.ContainsAny(registry, `/\`) {
		// Not a host name: never a path out of certs.d. ParseRepo
		// refuses these; this keeps a certs.d from being climbed out of
		// whatever the caller passes.
		return "", false
	}
	var dirs []string
	if configDir != "" {
		dirs = append(dirs, filepath.Join(configDir, "certs.d", registry))
	}
	dirs = append(dirs, filepath.Join(DockerCertsDir, registry))
	for _, d := range dirs {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			return d, true
		}
	}
	return dirs[0], false
}

// certsError is a certs.d directory snapvol cannot use: it names the
// registry, the file and what to fix.
type certsError struct {
	registry, file, why string
	err                 error
}

func (e *certsError) Error() string {
	s := fmt.Sprintf("registry %s: %s: %s", e.registry, e.file, e.why)
	if e.err != nil {
		s += ": " + e.err.Error()
	}
	return s
}

func (e *certsError) Unwrap() error { return e.err }

// readCertsDir reads a certs.d directory as Docker does: every *.crt holds
// CA certificates trusted besides the system's, every NAME.cert with its
// NAME.key is a client certificate offered to the registry. Stricter than
// Docker, which skips what it cannot parse: a *.crt without a certificate
// (or with a key in it), a certificate that does not parse, and a .cert or
// .key without its other half are errors, so a mistake is found when the
// operator makes it, not as an "unknown authority" later. A directory that
// does not exist is no error (nil roots: the system's; no client
// certificate). sum fingerprints what was read.
func readCertsDir(registry, dir string) (roots *x509.CertPool, certs []tls.Certificate, sum string, err error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, "", nil
	}
	if err != nil {
		return nil, nil, "", &certsError{registry: registry, file: dir, why: "cannot read the certs.d directory", err: err}
	}
	names := map[string]bool{}
	for _, e := range entries {
		names[e.Name()] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	h := sha256.New()
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, &certsError{registry: registry, file: filepath.Join(dir, name), why: "cannot read it", err: err}
		}
		fmt.Fprintf(h, "%s\x00%d\x00", name, len(b))
		h.Write(b)
		return b, nil
	}
	for _, name := range sorted {
		path := filepath.Join(dir, name)
		switch filepath.Ext(name) {
		case ".crt":
			data, err := read(name)
			if err != nil {
				return nil, nil, "", err
			}
			cas, err := parseCAs(data)
			if err != nil {
				return nil, nil, "", &certsError{registry: registry, file: path, why: "not a PEM CA certificate (a *.crt in certs.d holds the CA certificates that signed the registry's certificate; a client certificate is NAME.cert with NAME.key)", err: err}
			}
			if roots == nil {
				if roots, err = x509.SystemCertPool(); err != nil || roots == nil {
					// No system roots (a bare rootfs): the CA
					// certificates of certs.d alone.
					roots = x509.NewCertPool()
				}
			}
			for _, c := range cas {
				roots.AddCert(c)
			}
		case ".cert":
			key := strings.TrimSuffix(name, ".cert") + ".key"
			if !names[key] {
				return nil, nil, "", &certsError{registry: registry, file: path, why: fmt.Sprintf("a client certificate without its key: put its private key in %s (CA certificates end in .crt)", filepath.Join(dir, key))}
			}
			certPEM, err := read(name)
			if err != nil {
				return nil, nil, "", err
			}
			keyPEM, err := read(key)
			if err != nil {
				return nil, nil, "", err
			}
			c, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				return nil, nil, "", &certsError{registry: registry, file: path, why: fmt.Sprintf("not a PEM client certificate matching the private key in %s", filepath.Join(dir, key)), err: err}
			}
			certs = append(certs, c)
		case ".key":
			if cert := strings.TrimSuffix(name, ".key") + ".cert"; !names[cert] {
				return nil, nil, "", &certsError{registry: registry, file: path, why: fmt.Sprintf("a private key without its client certificate: put the certificate in %s", filepath.Join(dir, cert))}
			}
		}
	}
	return roots, certs, fmt.Sprintf("%x", h.Sum(nil)), nil
}

// parseCAs parses the certificates of a PEM file: at least one, and
// nothing but certificates.
func parseCAs(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("it holds a %s block, not only certificates", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate in it (-----BEGIN CERTIFICATE-----)")
	}
	return out, nil
}

// transports are the HTTP transports of registries with a certs.d
// directory, by registry: one per registry, kept while its directory's
// content stays the same, so connections are reused from one pull to the
// next and a changed directory takes effect at the next push or pull.
var transports struct {
	sync.Mutex
	m map[string]cachedTransport
}

type cachedTransport struct {
	dir, sum string
	t        *http.Transport
}

// registryTransport is the transport for registry: Docker's certs.d
// rules (certsDir, readCertsDir), wrapped so a TLS failure names the
// registry and the certs.d directory to fix (tlsError). dir is the certs.d
// directory read, or the one to create.
func registryTransport(configDir, registry string) (http.RoundTripper, string, error) {
	dir, exists := certsDir(configDir, registry)
	base := http.RoundTripper(defaultTransport())
	if exists {
		roots, certs, sum, err := readCertsDir(registry, dir)
		if err != nil {
			return nil, dir, err
		}
		transports.Lock()
		c, ok := transports.m[registry]
		if !ok || c.dir != dir || c.sum != sum {
			if ok {
				c.t.CloseIdleConnections()
			}
			t := newTransport()
			t.TLSClientConfig = &tls.Config{RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS12}
			c = cachedTransport{dir: dir, sum: sum, t: t}
			if transports.m == nil {
				transports.m = map[string]cachedTransport{}
			}
			transports.m[registry] = c
		}
		transports.Unlock()
		base = c.t
	}
	return &tlsExplained{base: base, registry: registry, dir: dir, configDir: configDir}, dir, nil
}

// newTransport is Go's default transport (proxy settings, timeouts) on
// HTTP/1.1, as Docker's registry client: over HTTP/2 a registry's refusal
// of the client certificate surfaces only as "client conn could not be
// established", which says nothing of what to fix.
func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ForceAttemptHTTP2 = false
	return t
}

// defaultTransport is the transport of registries without a certs.d
// directory (the system's roots), shared so connections are reused.
var defaultTransport = sync.OnceValue(newTransport)

// tlsExplained turns a TLS failure of base into a tlsError.
type tlsExplained struct {
	base                     http.RoundTripper
	registry, dir, configDir string
}

func (t *tlsExplained) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		if kind := tlsKind(err); kind != "" {
			return nil, &tlsError{registry: t.registry, dir: t.dir, configDir: t.configDir, kind: kind, err: err}
		}
	}
	return resp, err
}

// tlsKind classifies a TLS failure: "untrusted" (the registry's
// certificate does not verify), "refused" (the registry refused this
// host's client certificate, or its lack of one), "plain" (the registry
// answered plain HTTP); "" for anything else.
func tlsKind(err error) string {
	var verify *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var header tls.RecordHeaderError
	var op *net.OpError
	switch {
	case errors.As(err, &verify), errors.As(err, &unknown), errors.As(err, &host), errors.As(err, &invalid):
		return "untrusted"
	case errors.As(err, &header) && string(header.RecordHeader[:]) == "HTTP/":
		return "plain"
	case errors.As(err, &op) && op.Op == "remote error" && strings.HasPrefix(op.Err.Error(), "tls:"):
		// A TLS alert from the server: with the client certificate
		// missing or refused, TLS 1.3 reports it on the first read.
		return "refused"
	}
	return ""
}

// tlsError is a registry that TLS failed with, and what to put where.
type tlsError struct {
	registry, dir, configDir, kind string
	err                            error
}

func (e *tlsError) Error() string {
	hint := ""
	if e.configDir == "" {
		hint = " (the managed plugin cannot see /etc/docker: there, set REGISTRY_CONFIG and use REGISTRY_CONFIG/certs.d/" + e.registry + ")"
	}
	switch e.kind {
	case "untrusted":
		return fmt.Sprintf("the certificate of registry %s is not trusted (%v): put the CA certificate that signed it in %s%s, as Docker's certs.d",
			e.registry, e.err, filepath.Join(e.dir, "ca.crt"), hint)
	case "refused":
		return fmt.Sprintf("registry %s refused the TLS connection (%v): when it asks for a client certificate, put one in %s with its key in %s%s, as Docker's certs.d",
			e.registry, e.err, filepath.Join(e.dir, "client.cert"), filepath.Join(e.dir, "client.key"), hint)
	default:
		return fmt.Sprintf("registry %s answered plain HTTP to HTTPS (%v): snapvol speaks plain HTTP only to loopback registries, as Docker does; serve it over TLS", e.registry, e.err)
	}
}

func (e *tlsError) Unwrap() error { return e.err }

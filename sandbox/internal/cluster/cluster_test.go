package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
	"testing"
)

func TestPKI(t *testing.T) {
	dir := t.TempDir()
	p, err := writePKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(p.CACert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("CA certificate does not parse")
	}
	pair, err := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
			t.Errorf("serving certificate does not verify for %s: %v", host, err)
		}
	}
	tokens, _ := os.ReadFile(p.TokenFile)
	if got := strings.TrimSpace(string(tokens)); got != p.Token+",admin,admin,system:masters" {
		t.Errorf("token file %q", got)
	}
	for _, f := range []string{p.SAKey, p.ServerKey, p.TokenFile} {
		if st, _ := os.Stat(f); st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, st.Mode().Perm())
		}
	}
}

func TestFreePortsAreDistinct(t *testing.T) {
	ports, err := freePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Fatalf("ports %v: want 5 distinct", ports)
		}
		seen[p] = true
	}
}

func TestReadStateMissing(t *testing.T) {
	if _, err := ReadState(t.TempDir()); !os.IsNotExist(err) {
		t.Errorf("got %v, want not-exist", err)
	}
	if err := Down(t.TempDir(), os.Stderr); err != nil {
		t.Errorf("down with no sandbox: %v", err)
	}
}

package snapstore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/rollback-dev/rollback/internal/snapstore/snapstoretest"
)

const (
	accessKey = snapstoretest.AccessKey
	secretKey = snapstoretest.SecretKey
)

// A snapshot goes to the bucket with its checksum, reads back equal, and
// is found by anyone with the URL; one over the limit is refused before
// anything is sent; a changed object is caught.
func TestPutToARealS3Server(t *testing.T) {
	ctx := context.Background()
	bin, _ := filepath.Abs(filepath.Join("..", "..", "bin", "versitygw"))
	endpoint, _ := snapstoretest.Start(t, bin, "snapshots")
	s, err := Open(ctx, Options{URL: "s3://snapshots/prod/db", Endpoint: endpoint, AccessKeyID: accessKey, SecretAccessKey: secretKey, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(t.TempDir(), "before-undo-1.2.0-to-1.1.0.csv.tar")
	data := bytes.Repeat([]byte("id,category\n1,food\n"), 1000)
	if err := os.WriteFile(local, data, 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := s.Put(ctx, local, "INC-20261203-1")
	if err != nil {
		t.Fatal(err)
	}
	if o.URL != "s3://snapshots/prod/db/INC-20261203-1/before-undo-1.2.0-to-1.1.0.csv.tar" || o.Bytes != int64(len(data)) || len(o.SHA256) != 64 {
		t.Errorf("object %+v", o)
	}
	// Another replica (another client) finds it and checks it.
	other, _ := Open(ctx, Options{URL: "s3://snapshots/prod/db", Endpoint: endpoint, AccessKeyID: accessKey, SecretAccessKey: secretKey})
	if err := other.Check(ctx, o); err != nil {
		t.Errorf("check from another client: %v", err)
	}
	sum, err := s.c.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: strPtr("prod/db/INC-20261203-1/before-undo-1.2.0-to-1.1.0.csv.tar.sha256")})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	b.ReadFrom(sum.Body)
	if !strings.HasPrefix(b.String(), o.SHA256+"  before-undo") {
		t.Errorf("checksum object: %q", b.String())
	}
	// Changed in the store: caught.
	key := "prod/db/INC-20261203-1/before-undo-1.2.0-to-1.1.0.csv.tar"
	if _, err := s.c.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.bucket, Key: &key, Body: strings.NewReader("tampered")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctx, o); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a changed object: %v, want ErrCorrupt", err)
	}
	// Over the limit: refused, nothing sent.
	big := filepath.Join(t.TempDir(), "big.csv.tar")
	_ = os.WriteFile(big, make([]byte, 2<<20), 0o600)
	if _, err := s.Put(ctx, big, "INC-20261203-2"); !errors.Is(err, ErrTooLarge) {
		t.Errorf("over the limit: %v, want ErrTooLarge", err)
	}
	list, _ := s.c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: strPtr("prod/db/INC-20261203-2")})
	if list != nil && len(list.Contents) != 0 {
		t.Errorf("an oversized snapshot was uploaded: %d objects", len(list.Contents))
	}
	// Wrong credentials: an error, no panic, no secret in it.
	bad, _ := Open(ctx, Options{URL: "s3://snapshots/x", Endpoint: endpoint, AccessKeyID: accessKey, SecretAccessKey: "wrong-secret-0123456789"})
	if _, err := bad.Put(ctx, local, "INC-3"); err == nil || strings.Contains(err.Error(), "wrong-secret") {
		t.Errorf("wrong credentials: %v", err)
	}
	if _, err := Open(ctx, Options{URL: "https://snapshots"}); err == nil {
		t.Error("a URL that is not s3:// was accepted")
	}
}

func strPtr(s string) *string { return &s }

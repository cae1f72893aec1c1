// Package snapstore keeps database snapshots where every replica finds
// them: an S3-compatible bucket (AWS S3, MinIO, versitygw, ...). A
// snapshot taken by one replica of 'rollback serve' must survive that
// replica: the pod's own disk does not.
package snapstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// DefaultMaxBytes is the largest snapshot uploaded unless configured.
const DefaultMaxBytes = 10 << 30

// ErrTooLarge: the snapshot is over the store's size limit; nothing was
// uploaded.
var ErrTooLarge = errors.New("snapshot over the size limit")

// ErrCorrupt: what the store holds is not what was uploaded.
var ErrCorrupt = errors.New("snapshot in the store does not match")

// Options configure a Store.
type Options struct {
	// URL is s3://BUCKET[/PREFIX].
	URL string
	// Endpoint is an S3-compatible server's URL ("": AWS).
	Endpoint string
	Region   string
	// AccessKeyID and SecretAccessKey, when set, are the credentials;
	// otherwise the SDK's default chain (environment, web identity,
	// instance role).
	AccessKeyID, SecretAccessKey string
	// MaxBytes bounds a snapshot (default DefaultMaxBytes).
	MaxBytes int64
}

// Store is a bucket and prefix.
type Store struct {
	c              *s3.Client
	bucket, prefix string
	max            int64
}

// Open checks o and builds the client; it makes no request.
func Open(ctx context.Context, o Options) (*Store, error) {
	u, err := url.Parse(o.URL)
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		return nil, fmt.Errorf("snapshot store %q: expected s3://BUCKET[/PREFIX]", o.URL)
	}
	var opts []func(*awsconfig.LoadOptions) error
	opts = append(opts, awsconfig.WithRegion(cmpOr(o.Region, "us-east-1")))
	if o.AccessKeyID != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(o.AccessKeyID, o.SecretAccessKey, "")))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	c := s3.NewFromConfig(cfg, func(so *s3.Options) {
		if o.Endpoint != "" {
			so.BaseEndpoint = aws.String(o.Endpoint)
			so.UsePathStyle = true // S3-compatible servers rarely have bucket DNS names
		}
	})
	max := o.MaxBytes
	if max <= 0 {
		max = DefaultMaxBytes
	}
	return &Store{c: c, bucket: u.Host, prefix: strings.Trim(u.Path, "/"), max: max}, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Object is an uploaded snapshot.
type Object struct {
	URL    string `json:"url"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// Put uploads the file at local under NAME (within the store's prefix and
// dir), with its SHA-256 in the object's metadata and as NAME.sha256, and
// reads it back to check the store holds what was sent. Over the size
// limit nothing is uploaded.
func (s *Store) Put(ctx context.Context, local, dir string) (*Object, error) {
	f, err := os.Open(local)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > s.max {
		return nil, fmt.Errorf("%w: %s is %d bytes, the limit is %d (raise snapshotStore.maxBytes, or snapshot fewer tables)", ErrTooLarge, local, fi.Size(), s.max)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	name := path.Base(local)
	key := path.Join(s.prefix, dir, name)
	if _, err := s.c.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.bucket, Key: &key, Body: f, ContentLength: aws.Int64(fi.Size()),
		Metadata: map[string]string{"sha256": sum}}); err != nil {
		return nil, fmt.Errorf("upload %s: %w", key, err)
	}
	sumKey := key + ".sha256"
	if _, err := s.c.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.bucket, Key: &sumKey, Body: strings.NewReader(sum + "  " + name + "\n")}); err != nil {
		return nil, fmt.Errorf("upload %s: %w", sumKey, err)
	}
	o := &Object{URL: "s3://" + s.bucket + "/" + key, Bytes: fi.Size(), SHA256: sum}
	if err := s.Check(ctx, o); err != nil {
		return nil, err
	}
	return o, nil
}

// Check reads the object back and compares its size and SHA-256.
func (s *Store) Check(ctx context.Context, o *Object) error {
	key := strings.TrimPrefix(o.URL, "s3://"+s.bucket+"/")
	out, err := s.c.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil {
		return fmt.Errorf("read back %s: %w", o.URL, err)
	}
	defer out.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, out.Body)
	if err != nil {
		return fmt.Errorf("read back %s: %w", o.URL, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != o.Bytes || got != o.SHA256 {
		return fmt.Errorf("%w: %s holds %d bytes with sha256 %s; uploaded %d bytes with sha256 %s", ErrCorrupt, o.URL, n, got, o.Bytes, o.SHA256)
	}
	return nil
}

// Package snapstoretest starts a real S3-compatible server (versitygw,
// POSIX backend, built by scripts/build-peers.sh) for tests, with a bucket.
package snapstoretest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/rollback-dev/rollback/internal/peerbuild"
	"github.com/rollback-dev/rollback/internal/reaper"
)

// The server's root credentials.
const (
	AccessKey = "rollback-test-access"
	SecretKey = "rollback-test-secret-0123456789"
)

// Start runs the versitygw binary at bin on a free loopback port until the
// test ends, creates bucket, and returns the endpoint and a client. A
// missing binary fails the test: it never skips.
func Start(t testing.TB, bin, bucket string) (endpoint string, c *s3.Client) {
	t.Helper()
	peerbuild.Need(t, filepath.Dir(bin), "versitygw")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s is missing: run 'make peers' (scripts/build-peers.sh builds it)", bin)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := reaper.Child(exec.Command(bin, "--access", AccessKey, "--secret", SecretKey, "--port", addr, "posix", t.TempDir()))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	up := false
	for deadline := time.Now().Add(20 * time.Second); !up && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if conn, err := net.Dial("tcp", addr); err == nil {
			conn.Close()
			up = true
		}
	}
	if !up {
		t.Fatal("versitygw did not start")
	}
	endpoint = "http://" + addr
	cfg, err := awsconfig.LoadDefaultConfig(context.Background(), awsconfig.WithRegion("us-east-1"),
		awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, "")))
	if err != nil {
		t.Fatal(err)
	}
	c = s3.NewFromConfig(cfg, func(o *s3.Options) { o.BaseEndpoint, o.UsePathStyle = aws.String(endpoint), true })
	if _, err := c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatal(err)
	}
	return endpoint, c
}

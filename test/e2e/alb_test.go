package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rollback-dev/rollback/internal/alb"
	"github.com/rollback-dev/rollback/internal/alb/albtest"
	"github.com/rollback-dev/rollback/internal/cli"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/reaper"
)

const (
	albRegion   = "us-east-1"
	albListener = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/checkout/50dc6c495c0c9188/f2f7dc8efc522ab2"
	albBlue     = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/checkout-blue/73e2d6bc24d8a067"
	albGreen    = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/checkout-green/a7d3e2b1c4f5e6d7"
	albKey      = "AKIDE2EROLLBACK"
	albSecret   = "wJalrXUtnFEMI/K7MDENG/e2e-secret-never-shown"
)

// albRun runs the rollback binary for the "checkout" service with AWS
// credentials in its environment only (the SDK's standard chain).
func albRun(t *testing.T, st, cfg string, args ...string) (string, int) {
	t.Helper()
	cmd := reaper.Child(exec.Command(filepath.Join(binDir, "rollback"), append([]string{"--config", cfg}, args...)...))
	cmd.Env = append(os.Environ(), "ROLLBACK_STORE="+st, "KUBECONFIG="+kubeconfig,
		"AWS_ACCESS_KEY_ID="+albKey, "AWS_SECRET_ACCESS_KEY="+albSecret, "AWS_REGION=", "AWS_PROFILE=",
		"AWS_CONFIG_FILE="+filepath.Join(t.TempDir(), "none"), "AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(t.TempDir(), "none"),
		"AWS_EC2_METADATA_DISABLED=true")
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), albSecret) {
		t.Errorf("the AWS secret key reached the output:\n%s", out)
	}
	if strings.Contains(strings.Join(cmd.Args, " "), albSecret) {
		t.Error("the AWS secret key is in argv")
	}
	return string(out), code
}

// The runbook's AWS ALB example, whole: 'rollback run checkout' reads the
// listener through the AWS SDK against a local ELBv2 endpoint that checks
// each request as AWS documents it, forwards back to blue only after
// DescribeTargetHealth says blue is healthy, keeps green attached (weight
// 0) and tagged bad, verifies, blocks the green version and closes the
// incident. The secret key never reaches output, journal or store.
func TestALBListenerRunbook(t *testing.T) {
	parallel(t)
	s := albtest.Start(albRegion, albKey, albListener, albGreen,
		&albtest.TargetGroup{ARN: albBlue, Targets: []string{"healthy", "healthy"}},
		&albtest.TargetGroup{ARN: albGreen, Targets: []string{"healthy", "healthy"}})
	defer s.Close()
	cfg := filepath.Join(t.TempDir(), "rollback.yaml")
	body := fmt.Sprintf(`apiVersion: rollback/v1
kind: Config
services:
  checkout:
    loadBalancer:
      listenerArn: %s
      endpoint: %s
      timeout: 3s
      targetGroups: {blue: %s, green: %s}
`, albListener, s.URL, albBlue, albGreen)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	st := filepath.Join(t.TempDir(), "r.db")

	// Blue has an unhealthy target: refused, nothing changed, no incident.
	s.SetTargets(albBlue, "healthy", "unhealthy")
	out, code := albRun(t, st, cfg, "run", "checkout", "--yes")
	if code != cli.ExitRefused || !strings.Contains(out, "1 of 2 target(s) healthy") {
		t.Fatalf("unhealthy blue: exit %d, want %d\n%s", code, cli.ExitRefused, out)
	}
	if s.Calls("ModifyListener") != 0 || s.Weights()[albGreen] != 1 {
		t.Fatalf("the listener was modified for an unhealthy standby: %v", s.Weights())
	}

	s.SetTargets(albBlue, "healthy", "healthy")
	out, code = albRun(t, st, cfg, "run", "checkout", "--yes", "-o", "json")
	if code != 0 || !strings.Contains(out, `"outcome": "rolled-back"`) {
		t.Fatalf("run: exit %d\n%s", code, out)
	}
	if w := s.Weights(); w[albBlue] != 1 || w[albGreen] != 0 {
		t.Errorf("weights %v, want blue 1, green 0 (kept attached)", w)
	}
	if s.Calls("ModifyListener") != 1 {
		t.Errorf("ModifyListener called %d times", s.Calls("ModifyListener"))
	}
	if tags := s.Tags(albGreen); tags[kube.HealthAnnotation] != "bad" {
		t.Errorf("green tags %v", tags)
	}
	if sw := s.Tags(albListener)[alb.LastSwitchTag]; !strings.HasPrefix(sw, "from=green to=blue") {
		t.Errorf("last switch %q", sw)
	}
	if len(s.Errors) > 1 { // the one refusal above is not a request error
		t.Errorf("requests AWS would refuse: %v", s.Errors)
	}
	id := regexp.MustCompile(`INC-[0-9]+-[0-9]+`).FindString(out)
	status, _ := albRun(t, st, cfg, "status", id, "-o", "json")
	if !strings.Contains(status, `"status": "closed"`) || !strings.Contains(status, "target-health: 2/2 target(s) of blue healthy") {
		t.Errorf("incident %s not closed, or not verified:\n%s", id, status)
	}
	if b, err := os.ReadFile(st); err != nil || strings.Contains(string(b), albSecret) {
		t.Errorf("the store holds the secret key (or cannot be read: %v)", err)
	}
	gate, code := albRun(t, st, cfg, "gate", "checkout", "green")
	if code != cli.ExitBlocked {
		t.Errorf("gate green: exit %d\n%s", code, gate)
	}
	// A second rollback has nowhere to go: green is bad.
	if out, code := albRun(t, st, cfg, "run", "checkout", "--yes"); code != cli.ExitRefused || s.Calls("ModifyListener") != 1 {
		t.Errorf("second run: exit %d, ModifyListener %d\n%s", code, s.Calls("ModifyListener"), out)
	}
}

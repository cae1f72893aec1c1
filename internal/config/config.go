// Package config loads and validates rollback.yaml: the services rollback
// knows, and where each one runs. Every validation error names the file,
// the line and the field, and says what is expected.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/rollback-dev/rollback/internal/kinds"
)

// APIVersion is the only config version this build understands.
const APIVersion = "rollback/v1"

// Config is the whole rollback.yaml.
type Config struct {
	APIVersion string              `yaml:"apiVersion" json:"apiVersion"`
	Kind       string              `yaml:"kind" json:"kind"`
	Services   map[string]*Service `yaml:"services" json:"services"`

	// Path is the file the config was read from ("" when built in code).
	Path string `yaml:"-" json:"-"`
}

// Service is one deployable service.
type Service struct {
	Kubernetes Kubernetes `yaml:"kubernetes" json:"kubernetes"`
	Verify     *Verify    `yaml:"verify,omitempty" json:"verify,omitempty"`
	Notify     *Notify    `yaml:"notify,omitempty" json:"notify,omitempty"`
	Flag       *Flag      `yaml:"flag,omitempty" json:"flag,omitempty"`
	Database   *Database  `yaml:"database,omitempty" json:"database,omitempty"`
	Decide     *Decide    `yaml:"decide,omitempty" json:"decide,omitempty"`
	// LoadBalancer makes the service blue/green at a load balancer's
	// listener: its rollback forwards the listener back to the standby
	// target group (the runbook's AWS ALB example).
	LoadBalancer *LoadBalancer `yaml:"loadBalancer,omitempty" json:"loadBalancer,omitempty"`
	// Automation is what `rollback serve` may do for the service.
	Automation *Automation `yaml:"automation,omitempty" json:"automation,omitempty"`
	// GitOps says how the rollback is written back to Git when Argo CD or
	// Flux applies the service (nil: found from the reconciler's objects,
	// pushed to its branch).
	GitOps *GitOps `yaml:"gitops,omitempty" json:"gitops,omitempty"`
}

// GitOps is where and how a rollback lands in Git after the undo, so the
// paused reconciler can be resumed on the good version. Where the
// reconciler's own objects say it (a Kustomization's GitRepository, an
// Application's source), repo, branch and path may be left out.
type GitOps struct {
	// Revert is push (default: a commit on the tracked branch), pull-request
	// (a branch and a pull/merge request; the reconciler stays paused
	// until it merges), or off (leave the reconciler paused for a person).
	Revert string `yaml:"revert,omitempty" json:"revert,omitempty"`
	Repo   string `yaml:"repo,omitempty" json:"repo,omitempty"`
	Branch string `yaml:"branch,omitempty" json:"branch,omitempty"`
	Path   string `yaml:"path,omitempty" json:"path,omitempty"`
	// TokenEnv names the variable holding a token that may push (else
	// the GitRepository's secretRef); Username goes with it (default git).
	TokenEnv string `yaml:"tokenEnv,omitempty" json:"tokenEnv,omitempty"`
	Username string `yaml:"username,omitempty" json:"username,omitempty"`
	// Forge opens the pull request (with revert: pull-request, or when
	// the branch refuses the push).
	Forge *Forge `yaml:"forge,omitempty" json:"forge,omitempty"`
	// Wait bounds the wait for the reconciler's source to have the revert
	// before it is resumed (default 5m; the reconciler stays paused after).
	Wait time.Duration `yaml:"wait,omitempty" json:"wait,omitempty"`
}

// Forge is a GitHub or GitLab project that takes pull (merge) requests.
type Forge struct {
	Type     string `yaml:"type" json:"type"` // github, gitlab
	URL      string `yaml:"url,omitempty" json:"url,omitempty"`
	Project  string `yaml:"project" json:"project"`
	TokenEnv string `yaml:"tokenEnv" json:"tokenEnv"`
}

// Revert modes.
const (
	RevertPush        = "push"
	RevertPullRequest = "pull-request"
	RevertOff         = "off"
)

// LoadBalancer is an AWS Application Load Balancer listener whose default
// forward action switches between blue/green target groups. Credentials
// come from the AWS SDK's standard chain (environment, shared files,
// instance role), never from rollback.yaml.
type LoadBalancer struct {
	// Provider is aws-alb (the only one).
	Provider    string `yaml:"provider,omitempty" json:"provider,omitempty"`
	ListenerARN string `yaml:"listenerArn" json:"listenerArn"`
	// Region defaults to the AWS configuration's, else the ARN's.
	Region string `yaml:"region,omitempty" json:"region,omitempty"`
	// Endpoint overrides the ELBv2 endpoint (VPC endpoint, LocalStack).
	Endpoint string `yaml:"endpoint,omitempty" json:"endpoint,omitempty"`
	// TargetGroups names the colours: name -> target group ARN.
	TargetGroups map[string]string `yaml:"targetGroups,omitempty" json:"targetGroups,omitempty"`
	// Timeout bounds each AWS call (default 10s).
	Timeout time.Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
}

// Decide gives 'rollback run --severity' (and 'rollback decide') the live
// signals of the runbook's flowchart. The error-rate fact defaults to
// verify.errorRateQuery.
type Decide struct {
	ErrorRateQuery       string  `yaml:"errorRateQuery,omitempty" json:"errorRateQuery,omitempty"`
	LatencyRatioQuery    string  `yaml:"latencyRatioQuery,omitempty" json:"latencyRatioQuery,omitempty"`
	APIAdoptionQuery     string  `yaml:"apiAdoptionQuery,omitempty" json:"apiAdoptionQuery,omitempty"`
	APIAdoptionThreshold float64 `yaml:"apiAdoptionThreshold,omitempty" json:"apiAdoptionThreshold,omitempty"`
}

// Database says where a service's migrations live, so 'rollback run' can
// snapshot and down-migrate when the abandoned release migrated.
type Database struct {
	DSNEnv   string `yaml:"dsnEnv" json:"dsnEnv"`
	Dir      string `yaml:"dir" json:"dir"`
	Format   string `yaml:"format,omitempty" json:"format,omitempty"`
	Snapshot string `yaml:"snapshot,omitempty" json:"snapshot,omitempty"`
	// SnapshotStore keeps snapshots where every replica finds them (an
	// S3-compatible bucket); nil: the state directory only.
	SnapshotStore *SnapshotStore `yaml:"snapshotStore,omitempty" json:"snapshotStore,omitempty"`
}

// SnapshotStore is an S3-compatible bucket for snapshots. Credentials come
// from the named environment variables, or the AWS SDK's default chain.
type SnapshotStore struct {
	URL                string `yaml:"url" json:"url"` // s3://BUCKET[/PREFIX]
	Endpoint           string `yaml:"endpoint,omitempty" json:"endpoint,omitempty"`
	Region             string `yaml:"region,omitempty" json:"region,omitempty"`
	AccessKeyIDEnv     string `yaml:"accessKeyIdEnv,omitempty" json:"accessKeyIdEnv,omitempty"`
	SecretAccessKeyEnv string `yaml:"secretAccessKeyEnv,omitempty" json:"secretAccessKeyEnv,omitempty"`
	MaxBytes           int64  `yaml:"maxBytes,omitempty" json:"maxBytes,omitempty"`
}

// Notify says whom a rollback tells (runbook Steps 1 and 6). Secrets are
// never in the file: each *Env field names an environment variable.
type Notify struct {
	Slack     *SlackNotify     `yaml:"slack,omitempty" json:"slack,omitempty"`
	PagerDuty *PagerDutyNotify `yaml:"pagerduty,omitempty" json:"pagerduty,omitempty"`
	Webhooks  []WebhookNotify  `yaml:"webhooks,omitempty" json:"webhooks,omitempty"`
	// Timeout bounds one request (default 10s); Deadline the whole
	// declare or close step (default the runbook's 2 minutes).
	Timeout  time.Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
	Deadline time.Duration `yaml:"deadline,omitempty" json:"deadline,omitempty"`
}

// WebhookNotify posts the start message and the closing summary to a URL:
// a Slack incoming webhook ({"text": ...}) or a generic JSON webhook (the
// incident as JSON). The URL is in the file (url) or, when it carries a
// secret as Slack's do, in an environment variable (urlEnv).
type WebhookNotify struct {
	Name   string `yaml:"name" json:"name"`
	Format string `yaml:"format" json:"format"` // slack or json
	URL    string `yaml:"url,omitempty" json:"url,omitempty"`
	URLEnv string `yaml:"urlEnv,omitempty" json:"urlEnv,omitempty"`
}

// SlackNotify posts to an incident channel through the Web API.
type SlackNotify struct {
	TokenEnv string   `yaml:"tokenEnv" json:"tokenEnv"`
	APIURL   string   `yaml:"apiURL,omitempty" json:"apiURL,omitempty"`
	Mentions []string `yaml:"mentions,omitempty" json:"mentions,omitempty"`
}

// PagerDutyNotify sends Events API v2 events (routingKeyEnv) and, for the
// incident that paged on-call ('rollback run --pagerduty-incident'), sets
// its status through the REST API (apiTokenEnv and from).
type PagerDutyNotify struct {
	RoutingKeyEnv string `yaml:"routingKeyEnv,omitempty" json:"routingKeyEnv,omitempty"`
	EventsURL     string `yaml:"eventsURL,omitempty" json:"eventsURL,omitempty"`
	APITokenEnv   string `yaml:"apiTokenEnv,omitempty" json:"apiTokenEnv,omitempty"`
	From          string `yaml:"from,omitempty" json:"from,omitempty"`
	APIURL        string `yaml:"apiURL,omitempty" json:"apiURL,omitempty"`
}

// Flag is the feature flag to turn off (runbook Step 5).
type Flag struct {
	Provider    string `yaml:"provider" json:"provider"` // launchdarkly, unleash, flagd
	Key         string `yaml:"key" json:"key"`
	Project     string `yaml:"project,omitempty" json:"project,omitempty"`
	Environment string `yaml:"environment,omitempty" json:"environment,omitempty"`
	URL         string `yaml:"url,omitempty" json:"url,omitempty"`
	TokenEnv    string `yaml:"tokenEnv,omitempty" json:"tokenEnv,omitempty"`
	Path        string `yaml:"path,omitempty" json:"path,omitempty"`
	// Timeout is the flag step's deadline (default 1m).
	Timeout time.Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
}

// Verify says how to tell that a rollback worked (runbook Step 4).
type Verify struct {
	Prometheus     string `yaml:"prometheus,omitempty" json:"prometheus,omitempty"`
	ErrorRateQuery string `yaml:"errorRateQuery,omitempty" json:"errorRateQuery,omitempty"`
	// RequestsQuery and ErrorsQuery count requests and failed requests
	// over $window (replaced with the time since verification began):
	// with them the error-rate check passes only when the data shows,
	// with 95% confidence, that the rate is under maxErrorRate.
	RequestsQuery string `yaml:"requestsQuery,omitempty" json:"requestsQuery,omitempty"`
	ErrorsQuery   string `yaml:"errorsQuery,omitempty" json:"errorsQuery,omitempty"`
	// SlowQuery counts the requests over $window slower than the latency
	// limit (a histogram's count less its bucket at the limit): with
	// requestsQuery, p99 passes when the slow share's 95% upper bound is
	// at most 1%.
	SlowQuery    string        `yaml:"slowQuery,omitempty" json:"slowQuery,omitempty"`
	MaxErrorRate float64       `yaml:"maxErrorRate,omitempty" json:"maxErrorRate,omitempty"`
	LatencyQuery string        `yaml:"latencyQuery,omitempty" json:"latencyQuery,omitempty"`
	MaxLatency   time.Duration `yaml:"maxLatency,omitempty" json:"maxLatency,omitempty"`
	// LatencyFactor bounds p99 latency as a multiple of its pre-release
	// baseline (measured just before the abandoned revision was created).
	LatencyFactor float64 `yaml:"latencyFactor,omitempty" json:"latencyFactor,omitempty"`
	// PodWindow is how long after the rollback began the pod check watches
	// restart counts (default 0: the rollout itself is the window).
	PodWindow time.Duration `yaml:"podWindow,omitempty" json:"podWindow,omitempty"`
	Within    time.Duration `yaml:"within,omitempty" json:"within,omitempty"`
	Smoke     []Smoke       `yaml:"smoke,omitempty" json:"smoke,omitempty"`
}

// Smoke is one HTTP smoke check against the rolled-back version.
type Smoke struct {
	Name         string            `yaml:"name" json:"name"`
	Method       string            `yaml:"method,omitempty" json:"method,omitempty"`
	URL          string            `yaml:"url" json:"url"`
	Headers      map[string]string `yaml:"headers,omitempty" json:"headers,omitempty"`
	ExpectStatus int               `yaml:"expectStatus,omitempty" json:"expectStatus,omitempty"`
	ExpectBody   string            `yaml:"expectBody,omitempty" json:"expectBody,omitempty"`
	MaxLatency   time.Duration     `yaml:"maxLatency,omitempty" json:"maxLatency,omitempty"`
}

// Kubernetes says where a service's workload runs.
type Kubernetes struct {
	Context   string `yaml:"context,omitempty" json:"context,omitempty"`
	Namespace string `yaml:"namespace,omitempty" json:"namespace,omitempty"`
	Kind      string `yaml:"kind,omitempty" json:"kind,omitempty"`
	Name      string `yaml:"name,omitempty" json:"name,omitempty"`
	// ColorLabel is a blue/green Service's colour label (default: the
	// first of color, colour, version, slot its selector has).
	ColorLabel string `yaml:"colorLabel,omitempty" json:"colorLabel,omitempty"`
}

// Kinds rollback.yaml's kubernetes.kind accepts: the table of kinds'.
var supportedKinds = kinds.ConfigKinds()

// ErrNotFound is returned by Find when no config file exists where looked.
var ErrNotFound = errors.New("no rollback.yaml found")

// Error is a validation error at a place in a config file.
type Error struct {
	File  string
	Line  int
	Field string // dotted path, e.g. services.api.kubernetes.kind
	Msg   string
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %s", loc, clip(e.Field), clip(e.Msg))
	}
	return fmt.Sprintf("%s: %s", loc, clip(e.Msg))
}

// clip keeps one error line readable whatever the input held.
func clip(s string) string {
	const max = 300
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

// Errors is every problem found in one file.
type Errors []*Error

func (es Errors) Error() string {
	shown := es
	if len(shown) > MaxErrors {
		shown = shown[:MaxErrors]
	}
	parts := make([]string, len(shown), len(shown)+1)
	for i, e := range shown {
		parts[i] = e.Error()
	}
	if len(es) > MaxErrors {
		parts = append(parts, fmt.Sprintf("... and %d more error(s)", len(es)-MaxErrors))
	}
	return strings.Join(parts, "\n")
}

// Find returns the path of the config to use: explicit (from --config),
// else $ROLLBACK_CONFIG, else ./rollback.yaml. An explicit path that does
// not exist is an error; an implicit one is ErrNotFound.
func Find(explicit string, getenv func(string) string) (string, error) {
	if explicit != "" {
		if _, err := os.Stat(explicit); err != nil {
			return "", fmt.Errorf("config %s: %w", explicit, err)
		}
		return explicit, nil
	}
	if env := getenv("ROLLBACK_CONFIG"); env != "" {
		if _, err := os.Stat(env); err != nil {
			return "", fmt.Errorf("config %s (from $ROLLBACK_CONFIG): %w", env, err)
		}
		return env, nil
	}
	if _, err := os.Stat("rollback.yaml"); err == nil {
		return "rollback.yaml", nil
	}
	return "", ErrNotFound
}

// Load reads and validates the config at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Input limits: a rollback.yaml is a few kilobytes; anything near these
// sizes is a mistake (or hostile), refused before it is parsed.
const (
	MaxSize   = 1 << 20 // bytes of rollback.yaml
	MaxErrors = 20      // errors shown; the rest are counted
)

// Parse decodes and validates a config. name is used in error messages.
func Parse(name string, data []byte) (*Config, error) {
	if len(data) > MaxSize {
		return nil, &Error{File: name, Line: 1, Msg: fmt.Sprintf("the file is larger than %d KiB; a rollback.yaml is a few kilobytes: is this the right file?", MaxSize>>10)}
	}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); errors.Is(err, io.EOF) {
		return nil, &Error{File: name, Line: 1, Msg: "the file is empty; expected apiVersion, kind and services"}
	} else if err != nil {
		return nil, &Error{File: name, Line: yamlErrLine(err), Msg: "not valid YAML: " + yamlErrMsg(err)}
	}
	v := &validator{file: name}
	cfg := &Config{Path: name}
	if len(root.Content) == 0 {
		return nil, &Error{File: name, Line: 1, Msg: "the file is empty; expected apiVersion, kind and services"}
	}
	v.config(root.Content[0], cfg)
	if len(v.errs) > 0 {
		return nil, v.errs
	}
	return cfg, nil
}

// ServiceNames returns the configured service names, sorted.
func (c *Config) ServiceNames() []string {
	names := make([]string, 0, len(c.Services))
	for n := range c.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

var (
	dnsLabel     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	yamlLineRe   = regexp.MustCompile(`line (\d+)`)
)

func yamlErrLine(err error) int {
	if m := yamlLineRe.FindStringSubmatch(err.Error()); m != nil {
		var n int
		fmt.Sscanf(m[1], "%d", &n)
		return n
	}
	return 0
}

func yamlErrMsg(err error) string {
	return strings.TrimPrefix(yamlLineRe.ReplaceAllString(strings.TrimPrefix(err.Error(), "yaml: "), ""), ": ")
}

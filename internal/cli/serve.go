package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
	authv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/engine"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/progress"
	"github.com/rollback-dev/rollback/internal/runbook"
	"github.com/rollback-dev/rollback/internal/server"
	"github.com/rollback-dev/rollback/internal/store"
)

// ServeOptions are `rollback serve`'s flags.
type ServeOptions struct {
	Listen            string
	LeaderElect       bool
	LeaseNamespace    string
	LeaseName         string
	LeaseDuration     time.Duration
	Prometheus        string
	ScheduleEvery     time.Duration
	CalendarDrills    bool
	TokenReview       string // auto, true, false
	Operators         []string
	Readers           []string
	Triggers          []string
	TokenAudiences    []string
	AllowUnconfigured []string
	MaxRuns           int
	SlackTeam         string
	AnonymousRead     bool
	SlackOperators    []string
	SlackSecretEnv    string
	SlackHost         string
	LogFormat         string
	ShutdownGrace     time.Duration
	OutboundTimeout   time.Duration
}

func newServeCmd(f *Factory) *cobra.Command {
	o := &ServeOptions{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run rollback as a service: alert-triggered rollbacks, the HTTP API, a dashboard, the testing schedule",
		Long: `serve runs the rollback engine as a long-running service, in the cluster or
beside it, on the store (PostgreSQL for teams: --store postgres://...).

Triggers:
  POST /hooks/alertmanager       Alertmanager's webhook: a firing alert that a service's
                                 automation.alerts matches walks the decision flowchart from
                                 live facts; with automation.auto it runs the runbook, else it
                                 opens a proposed incident to approve. Repeats of one alert
                                 group change nothing.
  POST /hooks/flagger/rollback   Flagger's rollback webhook: 200 while the canary's service
                                 has an open rollback incident.
  POST /hooks/slack              /rollback status|run|approve SERVICE (Slack's signature is
                                 verified with $ROLLBACK_SLACK_SIGNING_SECRET).
  automation.watch               the leader watches each new release of the service for ten
                                 minutes, as 'rollback watch', and rolls back on a breach.
API (/api/v1, bearer tokens from $ROLLBACK_API_TOKENS as NAME=ROLE:TOKEN, ROLE read or
operate; in the cluster also service account tokens through TokenReview):
  GET incidents, incidents/ID, blocks, gate?service=&version=, schedule
  POST runs {service|selector+namespace}, incidents/ID/approve|decline|resume|close,
       blocks, signoffs, drills;  DELETE blocks/SERVICE/VERSION
Dashboard at /, metrics at /metrics, health at /healthz.

With --leader-elect, replicas elect a leader on a coordination.k8s.io Lease: the leader
resumes incidents whose run died (within the run lease, --lease-duration), runs due
rollback tests (dry run every release, migration drill every migration; chaos and fire
drills with --calendar-drills), and every replica serves requests. Every run holds its
service's lease in the store, so two replicas never roll a service back twice.`,
		Example: `  ROLLBACK_API_TOKENS='ops=operate:...,dash=read:...' rollback serve --listen :8080
  rollback serve --store postgres://rollback@db/rollback --leader-elect --lease-namespace rollback
  curl -H "Authorization: Bearer $TOKEN" localhost:8080/api/v1/incidents`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error { return runServe(cmd.Context(), f, o) },
	}
	fl := cmd.Flags()
	fl.StringVar(&o.Listen, "listen", ":8080", "address to serve on")
	fl.BoolVar(&o.LeaderElect, "leader-elect", false, "elect a leader among replicas on a Lease")
	fl.StringVar(&o.LeaseNamespace, "lease-namespace", "", "namespace of the leader Lease (default: the kubeconfig's, or the pod's)")
	fl.StringVar(&o.LeaseName, "lease-name", "rollback-serve", "name of the leader Lease")
	fl.DurationVar(&o.LeaseDuration, "lease-duration", 15*time.Second, "leader lease, and each run's store lease: a dead replica's run is resumed after about this long")
	fl.StringVar(&o.Prometheus, "prometheus", "", "Prometheus for the dashboard's charts and drills (default $ROLLBACK_PROMETHEUS_URL)")
	fl.DurationVar(&o.ScheduleEvery, "schedule-every", time.Minute, "how often the leader checks the rollback testing schedule")
	fl.BoolVar(&o.CalendarDrills, "calendar-drills", false, "run due chaos and fire drills on services' automation.staging")
	fl.StringVar(&o.TokenReview, "token-review", "auto", "check unknown bearer tokens with the API server's TokenReview: auto (in a cluster), true or false")
	fl.StringSliceVar(&o.Operators, "operator", nil, "users or group:NAME given the operate role through TokenReview (repeatable)")
	fl.StringSliceVar(&o.Readers, "reader", nil, "users or group:NAME given the read role through TokenReview (repeatable)")
	fl.StringSliceVar(&o.Triggers, "trigger", nil, "users or group:NAME given the trigger role through TokenReview: deliver alerts only (repeatable)")
	fl.StringSliceVar(&o.TokenAudiences, "token-audience", nil, "audiences a service account token must be issued for (TokenReview's spec.audiences; default: the API server's)")
	fl.StringSliceVar(&o.AllowUnconfigured, "allow-unconfigured", nil, "namespaces whose workloads may be rolled back by NAMESPACE/KIND/NAME though rollback.yaml names no such service (\"*\": all; default: configured services only)")
	fl.IntVar(&o.MaxRuns, "max-runs", 32, "rollbacks and triggers running at once on this replica; more are answered 429")
	fl.StringVar(&o.SlackTeam, "slack-team-id", "", "the Slack workspace (team_id) commands must come from")
	fl.BoolVar(&o.AnonymousRead, "anonymous-read", false, "let unauthenticated callers read (behind an authenticating proxy)")
	fl.StringSliceVar(&o.SlackOperators, "slack-operator", nil, "Slack user IDs (U…) who may run and approve (default: none; Slack only shows status)")
	fl.StringVar(&o.SlackSecretEnv, "slack-signing-secret-env", "ROLLBACK_SLACK_SIGNING_SECRET", "environment variable holding Slack's signing secret")
	fl.StringVar(&o.SlackHost, "slack-response-host", "", "host slash-command follow-ups may be posted to (default hooks.slack.com)")
	fl.StringVar(&o.LogFormat, "log-format", "json", "log format: json or text")
	fl.DurationVar(&o.ShutdownGrace, "shutdown-grace", 20*time.Second, "on SIGTERM, how long running rollbacks may finish before they are interrupted (journaled, resumable)")
	fl.DurationVar(&o.OutboundTimeout, "outbound-timeout", 5*time.Second, "timeout of each call the server makes on its own (charts, Slack follow-ups)")
	return cmd
}

func runServe(ctx context.Context, f *Factory, o *ServeOptions) error {
	var h slog.Handler
	switch o.LogFormat {
	case "json":
		h = slog.NewJSONHandler(f.IO.ErrOut, nil)
	case "text":
		h = slog.NewTextHandler(f.IO.ErrOut, nil)
	default:
		return usagef("--log-format: %q; expected json or text", o.LogFormat)
	}
	log := slog.New(h)
	cfg, err := f.Config()
	if err != nil {
		return err
	}
	auth, err := server.NewAuth(f.IO.Getenv("ROLLBACK_API_TOKENS"))
	if err != nil {
		return usageError{err: err}
	}
	auth.OperateSubjects, auth.ReadSubjects, auth.TriggerSubjects, auth.AnonymousRead = o.Operators, o.Readers, o.Triggers, o.AnonymousRead
	auth.Sessions = server.NewSessions(f.IO.Getenv("ROLLBACK_SESSION_KEY"))
	inCluster := f.IO.Getenv("KUBERNETES_SERVICE_HOST") != ""
	review := o.TokenReview == "true" || o.TokenReview == "auto" && inCluster
	if o.TokenReview != "auto" && o.TokenReview != "true" && o.TokenReview != "false" {
		return usagef("--token-review: %q; expected auto, true or false", o.TokenReview)
	}
	var access server.AccessReviewer
	if review {
		cs, err := f.clientFor("")
		if err != nil {
			return err
		}
		auth.Review = reviewTokens(cs, o.TokenAudiences, o.OutboundTimeout)
		access = reviewAccess(cs, o.OutboundTimeout)
	}
	s, err := f.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	if o.LeaderElect && !store.Shared(s) {
		return usagef("--leader-elect needs a store the replicas share: --store postgres://... (an SQLite file is one machine's; each replica would keep its own incidents and leases)")
	}
	if store.Shared(s) && o.MaxRuns > store.PostgresMaxConns-16 {
		return usagef("--max-runs %d: each run holds a store connection for its lock; at most %d with PostgreSQL (its pool is %d)", o.MaxRuns, store.PostgresMaxConns-16, store.PostgresMaxConns)
	}
	if !store.Shared(s) {
		// One serve per SQLite store: a second one would resume the
		// first one's runs as orphans.
		ex := &runbook.Executor{Store: s, Holder: engine.HolderName() + "/serve", LeaseTTL: o.LeaseDuration}
		release, err := engine.Hold(ctx, ex, "serve")
		if err != nil {
			return fmt.Errorf("another 'rollback serve' uses this SQLite store (%w); one replica per SQLite file, or --store postgres://... for several", err)
		}
		defer release()
	}
	runCtx, cancelRuns := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRuns()
	var election *server.Election
	opts := server.Options{
		Store: s, Config: cfg, Log: log,
		Engine: func(ev progress.Func) *engine.Engine {
			e := f.engine(s, nil)
			e.Events = ev
			return e
		},
		Resolve:            f.resolveAny,
		ResolveStaging:     f.resolveStaging,
		BulkClient:         func() (kubernetes.Interface, error) { return f.bulkClient("") },
		Auth:               auth,
		Access:             access,
		AllowUnconfigured:  o.AllowUnconfigured,
		MaxRuns:            o.MaxRuns,
		SlackTeam:          o.SlackTeam,
		SlackSigningSecret: f.IO.Getenv(o.SlackSecretEnv),
		SlackOperators:     o.SlackOperators,
		SlackResponseHost:  o.SlackHost,
		Prometheus:         cmp.Or(o.Prometheus, f.IO.Getenv("ROLLBACK_PROMETHEUS_URL")),
		OutboundTimeout:    o.OutboundTimeout,
		RunLeaseTTL:        o.LeaseDuration,
		Now:                f.Now,
	}
	if o.LeaderElect {
		cs, err := f.clientFor("")
		if err != nil {
			return err
		}
		ns := cmp.Or(o.LeaseNamespace, f.Namespace, f.IO.Getenv("POD_NAMESPACE"), "default")
		election = &server.Election{Client: cs, Namespace: ns, Name: o.LeaseName, Identity: engine.HolderName(), LeaseDuration: o.LeaseDuration}
		opts.Leading = election.Leading
	}
	srv := server.New(opts)
	srv.SetContext(runCtx)
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return usagef("--listen %s: %v", o.Listen, err)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	log.Info("serving", "addr", ln.Addr().String(), "leaderElect", o.LeaderElect, "services", len(cfgServices(cfg)))
	fmt.Fprintf(f.IO.ErrOut, "rollback serve: listening on %s\n", ln.Addr())
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	lead := func(lctx context.Context) {
		go srv.RunSchedule(lctx, o.ScheduleEvery, o.CalendarDrills)
		go srv.Supervise(lctx, 2*time.Second)
		srv.Lead(lctx, time.Second)
	}
	if election != nil {
		go func() {
			if err := election.Run(runCtx, lead); err != nil {
				log.Error("leader election", "err", err)
			}
		}()
	} else {
		go lead(runCtx)
	}
	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", o.ShutdownGrace.String())
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = hs.Shutdown(sctx)
	cancel()
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(o.ShutdownGrace):
		log.Warn("interrupting running rollbacks; their incidents stay open and resumable")
		cancelRuns()
		<-done
	}
	cancelRuns()
	return nil
}

func cfgServices(c *config.Config) []string {
	if c == nil {
		return nil
	}
	return c.ServiceNames()
}

// resolveAny resolves a service as the API and triggers name it: a
// configured service, KIND/NAME, or NAMESPACE/KIND/NAME.
func (f *Factory) resolveAny(_ context.Context, arg string) (*engine.Workload, error) {
	g := *f
	if parts := strings.Split(arg, "/"); len(parts) == 3 {
		g.Namespace, arg = parts[0], parts[1]+"/"+parts[2]
	}
	w, err := g.Resolve(arg)
	var ue usageError
	if errors.As(err, &ue) {
		return nil, ue.err
	}
	return w, err
}

// resolveStaging is a configured service's staging copy: the same kind
// and name in automation.staging's namespace (and context).
func (f *Factory) resolveStaging(_ context.Context, service string, st *config.Staging) (*engine.Workload, error) {
	cfg, err := f.Config()
	if err != nil {
		return nil, err
	}
	svc := cfg.Services[service]
	if svc == nil {
		return nil, fmt.Errorf("unknown service %q", service)
	}
	g := *f
	g.Namespace = st.Namespace
	if st.Context != "" {
		g.Context = st.Context
	}
	return g.Resolve(strings.ToLower(cmp.Or(svc.Kubernetes.Kind, "Deployment")) + "/" + svc.Kubernetes.Name)
}

// reviewTokens checks bearer tokens with the API server (TokenReview),
// for the given audiences.
func reviewTokens(cs kubernetes.Interface, audiences []string, timeout time.Duration) server.Reviewer {
	return func(ctx context.Context, token string) (server.Identity, bool, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		tr, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authv1.TokenReview{Spec: authv1.TokenReviewSpec{Token: token, Audiences: audiences}}, metav1.CreateOptions{})
		if err != nil {
			return server.Identity{}, false, err
		}
		u := tr.Status.User
		id := server.Identity{User: u.Username, UID: u.UID, Groups: u.Groups}
		if len(u.Extra) > 0 {
			id.Extra = map[string][]string{}
			for k, v := range u.Extra {
				id.Extra[k] = v
			}
		}
		return id, tr.Status.Authenticated && tr.Status.Error == "", nil
	}
}

// reviewAccess asks the API server whether a user may do something
// (SubjectAccessReview).
func reviewAccess(cs kubernetes.Interface, timeout time.Duration) server.AccessReviewer {
	return func(ctx context.Context, id server.Identity, a kube.Access) (bool, string, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{User: id.User, UID: id.UID, Groups: id.Groups,
			ResourceAttributes: &authzv1.ResourceAttributes{Verb: a.Verb, Group: a.Group, Resource: a.Resource, Namespace: a.Namespace, Name: a.Name}}}
		for k, v := range id.Extra {
			if sar.Spec.Extra == nil {
				sar.Spec.Extra = map[string]authzv1.ExtraValue{}
			}
			sar.Spec.Extra[k] = v
		}
		res, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			return false, "", err
		}
		return res.Status.Allowed && !res.Status.Denied, res.Status.Reason, nil
	}
}

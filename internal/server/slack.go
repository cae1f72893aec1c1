package server

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rollback-dev/rollback/internal/engine"
	"github.com/rollback-dev/rollback/internal/outbound"
	"github.com/rollback-dev/rollback/internal/store"
)

// slackMaxSkew is how old a signed Slack request may be (Slack's
// documented replay window).
const slackMaxSkew = 5 * time.Minute

// slackAnswerWait keeps a slash command's answer inside Slack's 3 seconds.
const slackAnswerWait = 2 * time.Second

// verifySlack checks Slack's request signature: v0=HMAC-SHA256(signing
// secret, "v0:TIMESTAMP:BODY"), with the timestamp within 5 minutes.
func verifySlack(secret string, h http.Header, body []byte, now time.Time) error {
	ts := h.Get("X-Slack-Request-Timestamp")
	sig := h.Get("X-Slack-Signature")
	if ts == "" || sig == "" {
		return fmt.Errorf("missing X-Slack-Request-Timestamp or X-Slack-Signature")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("X-Slack-Request-Timestamp %q is not a Unix time", clip(ts, 32))
	}
	if d := now.Sub(time.Unix(sec, 0)); d > slackMaxSkew || d < -slackMaxSkew {
		return fmt.Errorf("request timestamp is %s from now; Slack signs requests within 5 minutes (a replay?)", d.Round(time.Second))
	}
	mac := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(mac, "v0:%s:", ts)
	mac.Write(body)
	want := "v0=" + hex.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(want), []byte(sig)) {
		return fmt.Errorf("signature does not match")
	}
	return nil
}

// slackReply is a slash command's answer.
type slackReply struct {
	ResponseType string `json:"response_type"`
	Text         string `json:"text"`
}

// slack is the `/rollback status|run|approve ...` slash command.
func (s *Server) slack(w http.ResponseWriter, r *http.Request) {
	if s.o.SlackSigningSecret == "" {
		http.NotFound(w, r)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, http.StatusBadRequest, "request body: "+err.Error())
		return
	}
	if err := verifySlack(s.o.SlackSigningSecret, r.Header, body, s.o.Now()); err != nil {
		s.o.Log.Warn("slack request refused", "err", err)
		writeError(w, http.StatusUnauthorized, "slack signature: "+err.Error())
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		writeError(w, http.StatusBadRequest, "form: "+err.Error())
		return
	}
	if s.o.SlackTeam != "" && form.Get("team_id") != s.o.SlackTeam {
		s.o.Log.Warn("slack request refused: another workspace", "team", clip(form.Get("team_id"), 32))
		writeError(w, http.StatusForbidden, "this rollback serves another Slack workspace")
		return
	}
	// Each signed request is taken once: a captured request replayed
	// within Slack's 5 minutes (to this replica or another) is refused.
	// The store keeps the request's signature as a lease that outlives
	// the window.
	sum := sha256.Sum256([]byte(r.Header.Get("X-Slack-Signature")))
	if _, err := s.o.Store.AcquireLease(r.Context(), "slack-request:"+hex.EncodeToString(sum[:16]), fmt.Sprintf("%s/slack-%d", engine.HolderName(), s.seq.Add(1)),
		2*slackMaxSkew+time.Minute); err != nil {
		if errorsIsLease(err) {
			s.o.Log.Warn("slack request refused: a replay", "user_id", clip(form.Get("user_id"), 32))
			writeError(w, http.StatusUnauthorized, "slack signature: this request was already taken (a replay)")
			return
		}
		writeError(w, http.StatusServiceUnavailable, "store: "+err.Error())
		return
	}
	userID := form.Get("user_id")
	user := "slack:@" + form.Get("user_name") + " (" + userID + ")"
	args := strings.Fields(form.Get("text"))
	verb := ""
	if len(args) > 0 {
		verb = strings.ToLower(args[0])
	}
	usage := "Usage: `" + form.Get("command") + " status [SERVICE]`, `run SERVICE`, `approve SERVICE|INCIDENT`"
	reply := func(public bool, text string) {
		typ := "ephemeral"
		if public {
			typ = "in_channel"
		}
		writeJSON(w, http.StatusOK, slackReply{ResponseType: typ, Text: text})
	}
	switch verb {
	case "status":
		svc := ""
		if len(args) > 1 {
			svc = args[1]
		}
		reply(false, s.slackStatus(r.Context(), svc))
		return
	case "run", "approve":
		if len(args) != 2 {
			reply(false, usage)
			return
		}
	default:
		reply(false, usage)
		return
	}
	// Only user IDs: a user_name is the user's to change.
	switch {
	case len(s.o.SlackOperators) == 0:
		reply(false, "Slack can only show status here: no Slack operators are configured (serve --slack-operator USER_ID).")
		return
	case userID == "" || !slices.Contains(s.o.SlackOperators, userID):
		s.o.Log.Warn("slack command refused: not an operator", "user_id", clip(userID, 32), "verb", verb)
		reply(false, "You are not one of rollback's Slack operators (serve --slack-operator).")
		return
	}
	s.o.Metrics.Triggers.WithLabelValues("slack", verb).Inc()
	respond := form.Get("response_url")
	who := Principal{Name: user, Role: RoleOperate}
	switch verb {
	case "run":
		wl, err := s.workloadFor(r.Context(), who, args[1], true)
		if err != nil {
			reply(false, "Cannot roll back "+args[1]+": "+err.Error())
			return
		}
		s.slackStart(w, respond, wl, "Rollback of "+wl.Key()+" started by "+user, func(ctx context.Context, e *engine.Engine, started func(string)) (*engine.Outcome, error) {
			return e.Run(ctx, engine.RunRequest{Workload: wl, Started: started})
		})
	case "approve":
		id, err := s.proposalOf(r.Context(), args[1])
		if err != nil {
			reply(false, err.Error())
			return
		}
		prop, err := s.o.Store.GetIncident(r.Context(), id)
		if err != nil {
			reply(false, "No incident "+id+": "+err.Error())
			return
		}
		if prop.Status != store.StatusProposed {
			reply(false, notProposed(prop))
			return
		}
		wl, err := s.workloadFor(r.Context(), who, prop.Service, true)
		if err != nil {
			reply(false, "Cannot roll back "+prop.Service+": "+err.Error())
			return
		}
		s.slackStart(w, respond, wl, "Proposal "+id+" for "+prop.Service+" approved by "+user, func(ctx context.Context, e *engine.Engine, started func(string)) (*engine.Outcome, error) {
			return e.Approve(ctx, id, user, wl, started)
		})
	}
}

// proposalOf is an incident ID as given, or a service's proposed incident.
func (s *Server) proposalOf(ctx context.Context, arg string) (string, error) {
	if strings.HasPrefix(arg, "INC-") {
		return arg, nil
	}
	incs, err := s.o.Store.ListIncidents(ctx, arg)
	if err != nil {
		return "", err
	}
	for _, inc := range incs {
		if inc.Status == store.StatusProposed {
			return inc.ID, nil
		}
	}
	return "", fmt.Errorf("no proposed rollback of %s waits for approval", arg)
}

// slackStart starts a rollback, answers with its incident within Slack's
// 3 seconds, and posts how it ended to the command's response_url.
func (s *Server) slackStart(w http.ResponseWriter, responseURL string, wl *engine.Workload, what string, fn runFunc) {
	opened, err := s.launch(wl.Key(), wl, fn, func(out *engine.Outcome, err error) {
		text := what + ": "
		switch {
		case out == nil || out.Incident == "":
			text += "not started: " + errString(err)
		case err != nil:
			text += out.Incident + " stopped: " + err.Error() + " (it is journaled; `resume` continues it)"
		default:
			text += out.Incident + " finished; traffic is on " + versionText(out)
		}
		s.slackFollowUp(responseURL, text)
	})
	if err != nil {
		writeJSON(w, http.StatusOK, slackReply{ResponseType: "ephemeral", Text: what + ": not started: " + err.Error()})
		return
	}
	select {
	case id := <-opened:
		writeJSON(w, http.StatusOK, slackReply{ResponseType: "in_channel", Text: what + ": " + id})
	case <-time.After(slackAnswerWait):
		writeJSON(w, http.StatusOK, slackReply{ResponseType: "in_channel", Text: what + "; the incident follows here."})
	}
}

func versionText(out *engine.Outcome) string {
	if out.Plan != nil && out.Plan.To != nil {
		return out.Plan.Summary()
	}
	return "the restored version"
}

// slackFollowUp posts to a command's response_url, bounded by the
// outbound timeout. Only Slack's own hosts (or the configured one) are
// posted to.
func (s *Server) slackFollowUp(responseURL, text string) {
	u, err := url.Parse(responseURL)
	if err != nil || responseURL == "" {
		return
	}
	allowed := s.o.SlackResponseHost
	if allowed == "" {
		allowed = "hooks.slack.com"
	}
	if u.Host != allowed || (u.Scheme != "https" && s.o.SlackResponseHost == "") {
		s.o.Log.Warn("slack response_url not on Slack's host; not posted", "host", u.Host)
		return
	}
	b, _ := json.Marshal(slackReply{ResponseType: "in_channel", Text: text})
	ctx, cancel := context.WithTimeout(context.Background(), s.o.OutboundTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, responseURL, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	resp, err := outbound.Client(s.o.OutboundTimeout).Do(req)
	if err != nil {
		// A url.Error names the URL: response_url is a credential (it
		// posts to the channel), so only the cause is logged.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		s.o.Log.Warn("slack follow-up not delivered", "err", err)
		return
	}
	resp.Body.Close()
}

// slackStatus is the open and proposed incidents (of a service).
func (s *Server) slackStatus(ctx context.Context, service string) string {
	incs, err := s.o.Store.ListIncidents(ctx, service)
	if err != nil {
		return "Cannot read the store: " + err.Error()
	}
	var lines []string
	for _, inc := range incs {
		if inc.Status == store.StatusOpen || inc.Status == store.StatusProposed || service != "" && len(lines) < 3 {
			lines = append(lines, fmt.Sprintf("• %s %s %s: %s → %s (%s)", inc.ID, inc.Service, inc.Status, orDash(inc.BadVersion), orDash(inc.GoodVersion), inc.Decision))
		}
	}
	if len(lines) == 0 {
		return "No open or proposed rollbacks."
	}
	return strings.Join(lines, "\n")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

package engine

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/gitops"
	"github.com/rollback-dev/rollback/internal/image"
	"github.com/rollback-dev/rollback/internal/incident"
	"github.com/rollback-dev/rollback/internal/runbook"
	"github.com/rollback-dev/rollback/internal/store"
)

// DefaultGitOpsWait bounds the wait for the reconciler's source to have
// the revert before resuming it.
const DefaultGitOpsWait = 5 * time.Minute

func gitopsWait(svc *config.Service) time.Duration {
	if svc != nil && svc.GitOps != nil && svc.GitOps.Wait > 0 {
		return svc.GitOps.Wait
	}
	return DefaultGitOpsWait
}

// gitopsDeadline: the wait, plus the clone, push and pull request.
func gitopsDeadline(svc *config.Service, _ time.Duration) time.Duration {
	return gitopsWait(svc) + 2*time.Minute
}

// gitopsState is what an incident journaled about its reconciler.
type gitopsState struct {
	owner   *gitops.Owner
	revert  *revertRecord
	pr      *gitops.PullRequest
	resumed string
}

// revertRecord is the journaled revert: where it went and what it did.
type revertRecord struct {
	Source gitops.Source        `json:"source"`
	Result *gitops.RevertResult `json:"result"`
}

func (e *Engine) gitopsState(ctx context.Context, id string) (*gitopsState, error) {
	evs, err := e.Store.Events(ctx, id)
	if err != nil {
		return nil, err
	}
	st := &gitopsState{}
	for _, ev := range evs {
		var dst any
		switch ev.Key {
		case incident.KeyGitOpsOwner:
			st.owner = &gitops.Owner{}
			dst = st.owner
		case incident.KeyGitOpsRevert:
			st.revert = &revertRecord{}
			dst = st.revert
		case incident.KeyGitOpsPR:
			st.pr = &gitops.PullRequest{}
			dst = st.pr
		case incident.KeyGitOpsResumed:
			st.resumed = ev.Evidence
		}
		if dst != nil {
			if err := json.Unmarshal([]byte(ev.Evidence), dst); err != nil {
				return nil, fmt.Errorf("incident %s: the journaled %s is unreadable: %w", id, ev.Key, err)
			}
		}
	}
	if st.revert != nil && st.revert.Result == nil {
		return nil, fmt.Errorf("incident %s: the journaled revert has no result", id)
	}
	return st, nil
}

func (e *Engine) note(ctx context.Context, id, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = e.Store.AppendEvent(context.WithoutCancel(ctx), store.Event{Incident: id, Time: e.now(), Step: incident.StepGitOpsRevert,
		Phase: store.PhaseNote, Key: key, Evidence: string(b)})
	return err
}

// gitSource is where the revert goes: rollback.yaml's gitops section over
// what the reconciler's objects say, and the credentials to push.
func (e *Engine) gitSource(ctx context.Context, cs kubernetes.Interface, o gitops.Owner, cfg *config.GitOps) (*gitops.Source, gitops.Auth, error) {
	src, err := gitops.FindSource(ctx, cs, o)
	if err != nil && (cfg == nil || cfg.Repo == "") {
		return nil, gitops.Auth{}, err
	}
	if src == nil {
		src = &gitops.Source{}
	}
	if cfg != nil {
		if cfg.Repo != "" {
			src.Repo.URL = cfg.Repo
			src.SecretRef = ""
		}
		if cfg.Branch != "" {
			src.Repo.Branch = cfg.Branch
		}
		if cfg.Path != "" {
			src.Repo.Path = cfg.Path
		}
	}
	if src.Repo.Branch == "" {
		return nil, gitops.Auth{}, fmt.Errorf("%s: no branch to revert on: set gitops.branch in rollback.yaml", o)
	}
	var auth gitops.Auth
	// Credentials written into the reconciler's URL go to the auth, never
	// into the journal with the source.
	if u, err := url.Parse(src.Repo.URL); err == nil && u.User != nil {
		if p, ok := u.User.Password(); ok {
			auth = gitops.Auth{Username: u.User.Username(), Password: p}
		}
		src.Repo.URL = gitops.Redact(src.Repo.URL)
	}
	switch {
	case cfg != nil && cfg.TokenEnv != "":
		auth = gitops.Auth{Username: cfg.Username, Password: e.getenv(cfg.TokenEnv)}
		if auth.Password == "" {
			return nil, auth, fmt.Errorf("gitops.tokenEnv names %s, which is empty: export the token that may push to %s", cfg.TokenEnv, gitops.Redact(src.Repo.URL))
		}
	case auth.Password != "":
	case src.SecretRef != "":
		if auth, err = gitops.SecretAuth(ctx, cs, src.SecretRef); err != nil {
			return nil, auth, err
		}
	}
	return src, auth, nil
}

// revertSwaps are the abandoned and the restored image of each container
// the release changed, as journaled when the incident opened (matched by
// position; a container the release added has no image to go back to).
func (e *Engine) revertSwaps(ctx context.Context, id string) ([]gitops.Swap, error) {
	t, err := e.target(ctx, id)
	if err != nil {
		return nil, err
	}
	if len(t.FromImages) == 0 || len(t.ToImages) == 0 {
		return nil, errors.New("the abandoned and restored images are not journaled (an incident from before reverts were written to Git): revert by hand, then 'rollback gitops resume'")
	}
	var swaps []gitops.Swap
	for i := range t.FromImages {
		if i >= len(t.ToImages) || t.FromImages[i] == t.ToImages[i] {
			continue
		}
		bad, err := image.Parse(t.FromImages[i])
		if err != nil {
			return nil, err
		}
		good, err := image.Parse(t.ToImages[i])
		if err != nil {
			return nil, err
		}
		swaps = append(swaps, gitops.Swap{Bad: bad, Good: good})
	}
	if len(swaps) == 0 {
		return nil, fmt.Errorf("the abandoned and restored revisions run the same images (%s): nothing to revert in Git", strings.Join(t.ToImages, ", "))
	}
	return swaps, nil
}

// revertGitOps writes the rollback to the repository the paused reconciler
// reads, then resumes the reconciler once its source has the revert. A
// revert that needs a pull request leaves the reconciler paused until it
// merges ('rollback gitops resume' then finishes). Run again after a crash,
// it finds its commit (the incident's trailer) and its pull request, and
// pushes or opens nothing twice.
func revertGitOps(ctx context.Context, x *execution, sc *runbook.StepContext) (string, error) {
	e, id := x.e, x.inc.ID
	st, err := e.gitopsState(ctx, id)
	if err != nil {
		return "", err
	}
	if st.owner == nil {
		return "", fmt.Errorf("no GitOps reconciler was paused: %w", runbook.ErrSkip)
	}
	if st.resumed != "" {
		return st.resumed, nil
	}
	var cfg *config.GitOps
	if x.svc != nil {
		cfg = x.svc.GitOps
	}
	if cfg != nil && cfg.Revert == config.RevertOff {
		return fmt.Sprintf("gitops.revert is off: %s STAYS PAUSED; revert in Git, then 'rollback gitops resume %s'", st.owner, id), nil
	}
	if x.w == nil || x.w.Client == nil {
		return "", fmt.Errorf("no cluster client: %w", runbook.ErrSkip)
	}
	cs := x.w.Client
	// Where Git is, the credential and the images: read once, for the
	// revert and for reading the source's revision after it.
	src, auth, err := e.gitSource(ctx, cs, *st.owner, cfg)
	if err != nil {
		return "", err
	}
	swaps, err := e.revertSwaps(ctx, id)
	if err != nil {
		return "", err
	}
	rec, pr, err := e.writeRevert(ctx, id, cfg, src, auth, swaps, st)
	if err != nil {
		return "", err
	}
	commit := rec.Result.Commit
	if rec.Result.Unchanged {
		commit = rec.Result.Base
	}
	if pr != nil {
		ps, err := e.prState(ctx, cfg, *pr)
		if err != nil || !ps.Merged {
			msg := fmt.Sprintf("%s; pull request %s opened: %s STAYS PAUSED until it merges, then 'rollback gitops resume %s'", rec.Result.Summary(), pr.URL, st.owner, id)
			if err != nil {
				msg += " (its state could not be read: " + err.Error() + ")"
			}
			return msg, nil
		}
		commit = ps.MergeCommit
	}
	wait := gitopsWait(x.svc)
	if dl, ok := ctx.Deadline(); ok && time.Until(dl)-10*time.Second < wait {
		wait = time.Until(dl) - 10*time.Second
	}
	msg, err := e.awaitAndResume(ctx, cs, id, *st.owner, &rec.Source, auth, commit, swaps, wait)
	if err != nil {
		return "", fmt.Errorf("%s; %w", rec.Result.Summary(), err)
	}
	return rec.Result.Summary() + "; " + msg, nil
}

// gitAuthFor is the credential again (for reading the source's revision).
func (e *Engine) gitAuthFor(ctx context.Context, cs kubernetes.Interface, svc *config.Service, o gitops.Owner) (gitops.Auth, error) {
	var cfg *config.GitOps
	if svc != nil {
		cfg = svc.GitOps
	}
	_, auth, err := e.gitSource(ctx, cs, o, cfg)
	return auth, err
}

// writeRevert pushes the revert (or finds it pushed) and, when the branch
// refuses it or the service asks for one, opens the pull request; both
// journaled.
func (e *Engine) writeRevert(ctx context.Context, id string, cfg *config.GitOps, src *gitops.Source, auth gitops.Auth, swaps []gitops.Swap, st *gitopsState) (*revertRecord, *gitops.PullRequest, error) {
	if st.revert != nil && (st.pr != nil || st.revert.Result.Branch == st.revert.Source.Repo.Branch) {
		return st.revert, st.pr, nil
	}
	bad, good := swaps[0].Bad, swaps[0].Good
	inc, err := e.Store.GetIncident(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	body := fmt.Sprintf("Rolled back by rollback in incident %s: %s from %s to %s.\nDecision: %s.\n", id, inc.Service, bad.Version(), good.Version(), cmp.Or(inc.Decision, "roll back"))
	if u := strings.TrimRight(e.getenv("ROLLBACK_URL"), "/"); u != "" {
		body += "Incident: " + u + "/incidents/" + id + "\n"
	} else {
		body += "Incident: 'rollback status " + id + "'\n"
	}
	tmp, err := e.gitTempDir()
	if err != nil {
		return nil, nil, err
	}
	req := gitops.RevertRequest{Repo: src.Repo, Auth: auth, Incident: id, Swaps: swaps, Body: body, TempDir: tmp}
	wantPR := cfg != nil && cfg.Revert == config.RevertPullRequest
	var res *gitops.RevertResult
	if !wantPR {
		res, err = gitops.Revert(ctx, req)
		if errors.Is(err, gitops.ErrRejected) && cfg != nil && cfg.Forge != nil {
			wantPR = true // a protected branch: the pull request is the way in
		} else if errors.Is(err, gitops.ErrRejected) {
			return nil, nil, fmt.Errorf("%w; configure gitops.forge in rollback.yaml to open a pull request instead", err)
		} else if err != nil {
			return nil, nil, err
		}
	}
	var pr *gitops.PullRequest
	if wantPR {
		if cfg == nil || cfg.Forge == nil {
			return nil, nil, errors.New("a pull request needs gitops.forge in rollback.yaml")
		}
		req.PushTo = "rollback/" + id
		if res, err = gitops.Revert(ctx, req); err != nil {
			return nil, nil, err
		}
		if !res.Unchanged {
			f, err := e.forge(cfg)
			if err != nil {
				return nil, nil, err
			}
			p, err := f.Open(ctx, req.PushTo, src.Repo.Branch, fmt.Sprintf("Roll back %s to %s (%s)", inc.Service, good.Version(), id), body)
			if err != nil {
				return nil, nil, err
			}
			pr = &p
		}
	}
	rec := &revertRecord{Source: *src, Result: res}
	if err := e.note(ctx, id, incident.KeyGitOpsRevert, rec); err != nil {
		return nil, nil, err
	}
	if pr != nil {
		if err := e.note(ctx, id, incident.KeyGitOpsPR, pr); err != nil {
			return nil, nil, err
		}
	}
	return rec, pr, nil
}

func (e *Engine) gitTempDir() (string, error) {
	if e.StateDir == nil {
		return "", nil
	}
	d, err := e.StateDir("git")
	if err != nil {
		return "", err
	}
	return d, os.MkdirAll(d, 0o700)
}

func (e *Engine) forge(cfg *config.GitOps) (gitops.Forge, error) {
	f := cfg.Forge
	tok := e.getenv(f.TokenEnv)
	if tok == "" {
		return nil, fmt.Errorf("gitops.forge.tokenEnv names %s, which is empty: export a token that may open pull requests on %s", f.TokenEnv, f.Project)
	}
	return gitops.NewForge(gitops.ForgeConfig{Type: f.Type, URL: f.URL, Project: f.Project, Token: tok})
}

func (e *Engine) prState(ctx context.Context, cfg *config.GitOps, pr gitops.PullRequest) (gitops.PRState, error) {
	if cfg == nil || cfg.Forge == nil {
		return gitops.PRState{}, errors.New("gitops.forge is no longer in rollback.yaml")
	}
	f, err := e.forge(cfg)
	if err != nil {
		return gitops.PRState{}, err
	}
	return f.State(ctx, pr)
}

// awaitAndResume asks the reconciler to fetch, waits until its source has
// commit (or a later commit containing it), resumes it, and waits for it to
// apply that revision, journaling each. Resuming before the source has the
// revert would re-apply the broken version, so a timeout leaves it paused.
func (e *Engine) awaitAndResume(ctx context.Context, cs kubernetes.Interface, id string, o gitops.Owner, src *gitops.Source, auth gitops.Auth, commit string, swaps []gitops.Swap, wait time.Duration) (string, error) {
	tmp, err := e.gitTempDir()
	if err != nil {
		return "", err
	}
	start := e.now()
	deadline := time.Now().Add(wait)
	_ = gitops.RequestReconcile(ctx, cs, o, src, e.now())
	checked := map[string]bool{}
	var rev gitops.Revisions
	lastAsk := time.Now()
	for {
		if rev, err = gitops.ReadRevisions(ctx, cs, o, src); err != nil {
			return "", err
		}
		h := gitops.Commit(rev.Source)
		if h != "" && !checked[h] {
			sc, err := gitops.CheckSource(ctx, src.Repo, auth, h, commit, swaps, tmp)
			if err != nil {
				return "", err
			}
			if sc.Contains && len(sc.StillBad) > 0 && commit == "" {
				// Reverted by hand, the source not there yet: wait.
				checked[h] = true
				sc.Contains = false
			}
			if sc.Contains && len(sc.StillBad) > 0 {
				// A later commit released it again (image automation,
				// CI): resuming would apply it.
				return "", fmt.Errorf("%s's source is at %s, which has the revert %s but names the abandoned version again in %s: it STAYS PAUSED; revert that too, then 'rollback gitops resume %s'",
					o, rev.Source, gitops.ShortHash(commit), strings.Join(sc.StillBad, ", "), id)
			}
			if sc.Contains {
				break
			}
			checked[h] = h != commit // a revision not containing it never will
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s's source is at %q after %s, without the revert %s: it STAYS PAUSED; 'rollback gitops resume %s' once it has it",
				o, rev.Source, wait.Round(time.Second), cmp.Or(commit, "(a revision no longer naming the abandoned version)"), id)
		}
		if time.Since(lastAsk) > 10*time.Second {
			_ = gitops.RequestReconcile(ctx, cs, o, src, e.now())
			lastAsk = time.Now()
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	agreed := e.now()
	msg, err := gitops.Resume(ctx, cs, o, id)
	if err != nil {
		return "", err
	}
	msg = fmt.Sprintf("%s at source revision %s (its source had the revert %.1fs into the wait)", msg, rev.Source, agreed.Sub(start).Seconds())
	if _, err := e.Store.AppendEvent(context.WithoutCancel(ctx), store.Event{Incident: id, Time: e.now(), Step: incident.StepGitOpsRevert, Phase: store.PhaseNote,
		Key: incident.KeyGitOpsResumed, Evidence: msg}); err != nil {
		return "", err
	}
	_ = gitops.RequestReconcile(ctx, cs, o, src, e.now())
	// The applied revision, for the record (bounded: the resume is done).
	applyBy := time.Now().Add(min(time.Minute, max(time.Until(deadline), 10*time.Second)))
	for time.Now().Before(applyBy) && ctx.Err() == nil {
		if r, err := gitops.ReadRevisions(ctx, cs, o, src); err == nil && gitops.Applied(r.Applied, rev.Source) {
			return fmt.Sprintf("%s; applied %s at %s", msg, r.Applied, e.now().UTC().Format(time.RFC3339)), nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	return msg + "; not yet applied (the reconciler applies it at its next reconcile)", nil
}

package gitops

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rollback-dev/rollback/internal/gitops/gittest"
)

const (
	goodImage = "registry.local:5000/shop/web:v1.1.5"
	badImage  = "registry.local:5000/shop/web:v1.2.0"
)

func manifest(img string, replicas int) *string {
	return gittest.Str("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: " + string(rune('0'+replicas)) +
		"\n  template:\n    spec:\n      containers:\n      - name: web\n        image: " + img + " # pinned\n")
}

func request(s *gittest.Server, url, incident string, t *testing.T) RevertRequest {
	return RevertRequest{Repo: Repo{URL: url, Branch: "main", Path: "./deploy"}, Auth: Auth{Username: "rollback", Password: s.Token},
		Incident: incident, Swaps: []Swap{{Bad: mustRef(t, badImage), Good: mustRef(t, goodImage)}}, Body: "Decision: roll back.\nIncident: http://rollback.local/incidents/" + incident}
}

// The release commit is reverted when nothing touched its files since;
// a second run of the same incident finds its commit and pushes nothing.
func TestRevertCleanlyOnceOnly(t *testing.T) {
	s := gittest.Start(t)
	url := s.Create(t, "shop")
	s.Commit(t, "shop", "main", map[string]*string{"deploy/deployment.yaml": manifest(goodImage, 3), "README.md": gittest.Str("shop\n")}, "v1.1.5")
	release := s.Commit(t, "shop", "main", map[string]*string{"deploy/deployment.yaml": manifest(badImage, 3)}, "Release v1.2.0")
	s.Commit(t, "shop", "main", map[string]*string{"README.md": gittest.Str("shop, documented\n")}, "docs")

	ctx := context.Background()
	res, err := Revert(ctx, request(s, url, "INC-7", t))
	if err != nil {
		t.Fatal(err)
	}
	if res.Reverted != release || res.Already || res.Unchanged || s.Pushes() != 1 {
		t.Fatalf("got %+v after %d pushes, want a revert of %s", res, s.Pushes(), release)
	}
	log := s.Log(t, "shop", "main")
	if log[0].Hash != res.Commit || !strings.HasPrefix(log[0].Message, `Revert "Release v1.2.0"`) ||
		!strings.Contains(log[0].Message, "This reverts commit "+release) || !strings.Contains(log[0].Message, "\nRollback-Incident: INC-7") ||
		!strings.Contains(log[0].Message, "http://rollback.local/incidents/INC-7") {
		t.Errorf("head commit %s:\n%s", log[0].Hash, log[0].Message)
	}
	if got := s.Read(t, "shop", "main", "deploy/deployment.yaml"); got != *manifest(goodImage, 3) {
		t.Errorf("after the revert:\n%s", got)
	}
	again, err := Revert(ctx, request(s, url, "INC-7", t))
	if err != nil || !again.Already || again.Commit != res.Commit || s.Pushes() != 1 {
		t.Errorf("second run: %+v %v after %d pushes; want the first commit found, no push", again, err, s.Pushes())
	}
	if strings.Contains(res.Summary(), s.Token) || strings.Contains(again.Summary(), s.Token) {
		t.Error("the token is in a summary")
	}
}

// A later commit changed the release's file: only the image field is
// edited, the later change stays. Kustomize images: and Helm values too.
func TestRevertEditsWhenNotClean(t *testing.T) {
	s := gittest.Start(t)
	url := s.Create(t, "shop")
	kust := func(tag string) *string {
		return gittest.Str("resources: [deployment.yaml]\nimages:\n- name: web\n  newName: registry.local:5000/shop/web\n  newTag: " + tag + "\n")
	}
	values := func(tag string, extra string) *string {
		return gittest.Str("image:\n  repository: registry.local:5000/shop/web\n  tag: \"" + tag + "\"\n" + extra)
	}
	s.Commit(t, "shop", "main", map[string]*string{"deploy/deployment.yaml": manifest(goodImage, 3), "deploy/kustomization.yaml": kust("v1.1.5"),
		"deploy/values.yaml": values("v1.1.5", ""), "other/deployment.yaml": manifest(badImage, 1)}, "v1.1.5")
	s.Commit(t, "shop", "main", map[string]*string{"deploy/deployment.yaml": manifest(badImage, 3), "deploy/kustomization.yaml": kust("v1.2.0"),
		"deploy/values.yaml": values("v1.2.0", "")}, "Release v1.2.0")
	s.Commit(t, "shop", "main", map[string]*string{"deploy/deployment.yaml": manifest(badImage, 5), "deploy/values.yaml": values("v1.2.0", "replicas: 5\n")}, "scale to 5")

	res, err := Revert(context.Background(), request(s, url, "INC-8", t))
	if err != nil {
		t.Fatal(err)
	}
	if res.Reverted != "" || len(res.Edits) != 3 {
		t.Fatalf("got %+v, want three field edits", res)
	}
	for file, want := range map[string]string{"deploy/deployment.yaml": *manifest(goodImage, 5), "deploy/kustomization.yaml": *kust("v1.1.5"),
		"deploy/values.yaml": *values("v1.1.5", "replicas: 5\n"), "other/deployment.yaml": *manifest(badImage, 1)} {
		if got := s.Read(t, "shop", "main", file); got != want {
			t.Errorf("%s:\n%s\nwant\n%s", file, got, want)
		}
	}
	if m := s.Log(t, "shop", "main")[0].Message; !strings.HasPrefix(m, "Roll back web to v1.1.5") || !strings.Contains(m, "Rollback-Incident: INC-8") {
		t.Errorf("message:\n%s", m)
	}
	// Git already at the good version: nothing pushed.
	res, err = Revert(context.Background(), request(s, url, "INC-9", t))
	if err != nil || !res.Unchanged || s.Pushes() != 1 {
		t.Errorf("nothing to revert: %+v %v, %d pushes", res, err, s.Pushes())
	}
}

// A protected branch refuses the push (ErrRejected); the pull request's
// branch takes it, once.
func TestRevertProtectedBranch(t *testing.T) {
	s := gittest.Start(t)
	url := s.Create(t, "shop")
	s.Commit(t, "shop", "main", map[string]*string{"deploy/deployment.yaml": manifest(goodImage, 3)}, "v1.1.5")
	s.Commit(t, "shop", "main", map[string]*string{"deploy/deployment.yaml": manifest(badImage, 3)}, "Release v1.2.0")
	s.Protect(t, "shop", "main")
	ctx := context.Background()
	_, err := Revert(ctx, request(s, url, "INC-10", t))
	if !errors.Is(err, ErrRejected) || strings.Contains(err.Error(), s.Token) {
		t.Fatalf("push to a protected branch: %v", err)
	}
	req := request(s, url, "INC-10", t)
	req.PushTo = "rollback/INC-10"
	res, err := Revert(ctx, req)
	if err != nil || res.Branch != "rollback/INC-10" || s.Head(t, "shop", "rollback/INC-10") != res.Commit {
		t.Fatalf("pull request branch: %+v %v", res, err)
	}
	pushes := s.Pushes()
	again, err := Revert(ctx, req)
	if err != nil || !again.Already || again.Commit != res.Commit || s.Pushes() != pushes {
		t.Errorf("second run: %+v %v", again, err)
	}
	// Without the token: what to do.
	req.Auth = Auth{}
	req.Incident = "INC-11"
	req.PushTo = "rollback/INC-11"
	if _, err := Revert(ctx, req); !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "gitops.tokenEnv") {
		t.Errorf("no token: %v", err)
	}
}

// Someone pushes between the clone and the push: the revert is made again
// on their commit, which stays.
func TestRevertRacesAPush(t *testing.T) {
	s := gittest.Start(t)
	url := s.Create(t, "shop")
	s.Commit(t, "shop", "main", map[string]*string{"deploy/deployment.yaml": manifest(goodImage, 3)}, "v1.1.5")
	s.Commit(t, "shop", "main", map[string]*string{"deploy/deployment.yaml": manifest(badImage, 3)}, "Release v1.2.0")
	s.PushDelay.Store(int64(time.Second))
	done := make(chan error, 1)
	var res *RevertResult
	go func() {
		var err error
		res, err = Revert(context.Background(), request(s, url, "INC-12", t))
		done <- err
	}()
	for s.Pushes() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	theirs := s.Commit(t, "shop", "main", map[string]*string{"README.md": gittest.Str("meanwhile\n")}, "meanwhile")
	s.PushDelay.Store(0)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	log := s.Log(t, "shop", "main")
	if log[0].Hash != res.Commit || log[1].Hash != theirs || s.Pushes() != 2 {
		t.Errorf("history %v, result %+v, %d pushes; want the revert on top of the racing commit, pushed twice", log[:2], res, s.Pushes())
	}
}

// What rollback cannot find or must not touch: a release written outside
// the path is an error (never "unchanged", which would resume the
// reconciler on it); a release commit that also released another service
// is not reverted whole, only this service's field is edited.
func TestRevertRefusesWhatItCannotSee(t *testing.T) {
	s := gittest.Start(t)
	url := s.Create(t, "mono")
	s.Commit(t, "mono", "main", map[string]*string{"deploy/deployment.yaml": manifest(goodImage, 3), "other/deployment.yaml": manifest("registry.local:5000/shop/api:v3", 1),
		"base/deployment.yaml": manifest(goodImage, 1)}, "initial")
	s.Commit(t, "mono", "main", map[string]*string{"deploy/deployment.yaml": manifest(badImage, 3), "other/deployment.yaml": manifest("registry.local:5000/shop/api:v4", 1)}, "Release web v1.2.0 and api v4")
	res, err := Revert(context.Background(), request(s, url, "INC-20", t))
	if err != nil || res.Reverted != "" || len(res.Edits) != 1 {
		t.Fatalf("got %+v %v, want one field edit, not a revert of both services", res, err)
	}
	if got := s.Read(t, "mono", "main", "other/deployment.yaml"); got != *manifest("registry.local:5000/shop/api:v4", 1) {
		t.Errorf("the other service was touched:\n%s", got)
	}
	// The release is in base/, outside the path: not found, not
	// "unchanged".
	s.Commit(t, "mono", "main", map[string]*string{"base/deployment.yaml": manifest(badImage, 1), "deploy/deployment.yaml": gittest.Str("resources: [../base]\n")}, "move to a base")
	pushes := s.Pushes()
	_, err = Revert(context.Background(), request(s, url, "INC-21", t))
	if !errors.Is(err, ErrNotFound) || s.Pushes() != pushes {
		t.Errorf("release outside the path: %v, %d pushes; want ErrNotFound and no push", err, s.Pushes()-pushes)
	}
}

// The source's revision contains the revert but a later commit released
// the bad image again: the check says so (the reconciler must not resume).
func TestCheckSourceSeesARerelease(t *testing.T) {
	s := gittest.Start(t)
	url := s.Create(t, "shop")
	s.Commit(t, "shop", "main", map[string]*string{"deploy/deployment.yaml": manifest(goodImage, 3)}, "v1.1.5")
	s.Commit(t, "shop", "main", map[string]*string{"deploy/deployment.yaml": manifest(badImage, 3)}, "Release v1.2.0")
	req := request(s, url, "INC-30", t)
	res, err := Revert(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := CheckSource(context.Background(), req.Repo, req.Auth, res.Commit, res.Commit, req.Swaps, "")
	if err != nil || !sc.Contains || len(sc.StillBad) != 0 {
		t.Fatalf("at the revert: %+v %v", sc, err)
	}
	later := s.Commit(t, "shop", "main", map[string]*string{"deploy/deployment.yaml": manifest(badImage, 4)}, "image automation: v1.2.0")
	sc, err = CheckSource(context.Background(), req.Repo, req.Auth, later, res.Commit, req.Swaps, "")
	if err != nil || !sc.Contains || len(sc.StillBad) != 1 {
		t.Errorf("after a re-release: %+v %v, want contains and still bad", sc, err)
	}
	sc, err = CheckSource(context.Background(), req.Repo, req.Auth, res.Base, res.Commit, req.Swaps, "")
	if err != nil || sc.Contains {
		t.Errorf("before the revert: %+v %v, want not contained", sc, err)
	}
}

// A clone writes at most its bound: past it the revert fails with
// ErrTooLarge and nothing is pushed.
func TestRevertCloneIsBounded(t *testing.T) {
	s := gittest.Start(t)
	url := s.Create(t, "big")
	s.Commit(t, "big", "main", map[string]*string{"deploy/deployment.yaml": manifest(goodImage, 3), "blob.txt": gittest.Str(randomText(200000))}, "v1.1.5")
	s.Commit(t, "big", "main", map[string]*string{"deploy/deployment.yaml": manifest(badImage, 3)}, "Release v1.2.0")
	req := request(s, url, "INC-40", t)
	req.MaxBytes = 64 << 10
	if _, err := Revert(context.Background(), req); !errors.Is(err, ErrTooLarge) || s.Pushes() != 0 {
		t.Fatalf("got %v after %d pushes, want ErrTooLarge and no push", err, s.Pushes())
	}
	req.MaxBytes = 0
	if _, err := Revert(context.Background(), req); err != nil {
		t.Fatalf("within the default bound: %v", err)
	}
}

func randomText(n int) string {
	b := make([]byte, n)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = 'a' + byte(x%26)
	}
	return string(b)
}

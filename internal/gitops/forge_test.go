package gitops

import (
	"context"
	"strings"
	"testing"

	"github.com/rollback-dev/rollback/internal/gitops/gittest"
)

// Through each forge's maintained client against a stand-in that checks
// the documented request shapes: a pull request is opened once (a create
// that failed after the forge recorded it is found, not repeated), reads
// as open until merged, then merged with its merge commit.
func TestForgePullRequests(t *testing.T) {
	for _, kind := range []string{"github", "gitlab"} {
		t.Run(kind, func(t *testing.T) {
			s := gittest.Start(t)
			url := s.Create(t, "shop")
			s.Commit(t, "shop", "main", map[string]*string{"deploy/deployment.yaml": manifest(goodImage, 3)}, "v1.1.5")
			s.Commit(t, "shop", "main", map[string]*string{"deploy/deployment.yaml": manifest(badImage, 3)}, "Release v1.2.0")
			fs := gittest.StartForge(t, s, "shop")
			project := "acme/shop"
			f, err := NewForge(ForgeConfig{Type: kind, URL: fs.URL, Project: project, Token: fs.Token})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if _, err := f.Open(ctx, "rollback/INC-1", "main", "Roll back", "body"); err == nil {
				t.Fatal("a pull request from a branch that does not exist was opened")
			}
			req := request(s, url, "INC-1", t)
			req.PushTo = "rollback/INC-1"
			if _, err := Revert(ctx, req); err != nil {
				t.Fatal(err)
			}
			fs.Bad = nil
			fs.FailCreateAfterRecord = true
			if _, err := f.Open(ctx, "rollback/INC-1", "main", "Roll back web to v1.1.5", "Incident INC-1"); err == nil {
				t.Fatal("the failed create was not reported")
			}
			pr, err := f.Open(ctx, "rollback/INC-1", "main", "Roll back web to v1.1.5", "Incident INC-1")
			if err != nil || pr.Number != 1 || !strings.Contains(pr.URL, "1") || len(fs.PRs()) != 1 {
				t.Fatalf("open: %+v %v; %d pull requests", pr, err, len(fs.PRs()))
			}
			if st, err := f.State(ctx, pr); err != nil || st.Merged {
				t.Fatalf("state before the merge: %+v %v", st, err)
			}
			merge := fs.MergePR(t, pr.Number)
			st, err := f.State(ctx, pr)
			if err != nil || !st.Merged || st.MergeCommit != merge {
				t.Errorf("state after the merge: %+v %v, want merged at %s", st, err, merge)
			}
			if again, err := f.Open(ctx, "rollback/INC-1", "main", "Roll back", "x"); err != nil || again.Number != pr.Number {
				t.Errorf("open after the merge: %+v %v, want the merged one", again, err)
			}
			if len(fs.Bad) > 0 {
				t.Errorf("requests not in the documented shape: %v", fs.Bad)
			}
			// A wrong token is refused.
			f2, _ := NewForge(ForgeConfig{Type: kind, URL: fs.URL, Project: project, Token: "wrong"})
			if _, err := f2.State(ctx, pr); err == nil {
				t.Error("a wrong token was accepted")
			}
		})
	}
}

package incident

import "time"

// Step names the runbook's steps are journaled under.
const (
	StepDeclare = "declare"
	// StepDecision is the decision to roll backward: recorded on the
	// incident when it opens, never run as a step.
	StepDecision = "decision"
	StepSnapshot = "snapshot"
	StepGitOps   = "gitops-pause"
	StepKube     = "kube-undo"
	StepBlock    = "block"
	// StepGitOpsRevert writes the rollback to Git and resumes the
	// reconciler once its source has it.
	StepGitOpsRevert = "gitops-revert"
	StepDownMig      = "down-migrate"
	StepSmoke        = "smoke"
	StepMetrics      = "metrics"
	StepFlagOff      = "flag-off"
	StepClose        = "close"
	StepReview       = "schedule-review"
	// StepReviewDone is journaled when the review took place.
	StepReviewDone = "review-done"
	// KeyGitOpsOwner journals the reconciler a run paused (JSON), and
	// KeyGitOpsResumed that it was resumed.
	KeyGitOpsOwner   = "gitops-owner"
	KeyGitOpsResumed = "gitops-resumed"
	// KeyGitOpsRevert journals the revert written to Git (JSON), and
	// KeyGitOpsPR the pull request it waits in (JSON).
	KeyGitOpsRevert = "gitops-revert"
	KeyGitOpsPR     = "gitops-pr"
)

// Def is one step of the runbook as every part of rollback names it: its
// journal name, its title, the checklist item it ticks ("" for none) and
// the runbook's time for it (0 where the runbook gives none).
type Def struct {
	Name      string
	Title     string
	Checklist string
	Budget    time.Duration
	// OnIncident: the item is read from the incident itself (the
	// decision), not from a step's journal.
	OnIncident bool
}

// The runbook's budgets.
const (
	BudgetDeclare = 2 * time.Minute // Step 1: declare and notify (< 2 minutes)
	BudgetKube    = 3 * time.Minute // Step 2: Kubernetes rollback (< 3 minutes)
	BudgetVerify  = 5 * time.Minute // Step 4: recovered within 5 minutes of the rollback
)

// Runbook is the runbook's steps in the order a run takes them: the
// engine runs them in this order (internal/engine attaches each one's
// body by name), 'rollback plan' outlines them, and the checklist lists
// its items in it. Nothing waits before the Kubernetes undo that need not:
// communication runs beside recovery, the reconciler is paused because it
// would re-apply the broken version, and the database snapshot, which only
// the down migration needs, is taken after the undo. The broken version
// is blocked as soon as the rollback has moved off it.
var Runbook = []Def{
	{Name: StepDeclare, Title: "Declare incident and notify", Checklist: "Incident declared and stakeholders notified", Budget: BudgetDeclare},
	{Name: StepDecision, Title: "Decide to roll backward", Checklist: "Decision to roll-backward documented (rationale)", OnIncident: true},
	{Name: StepGitOps, Title: "Pause the GitOps reconciler"},
	{Name: StepKube, Title: "Kubernetes rollback", Checklist: "Kubernetes rollback executed (kubectl rollout undo)", Budget: BudgetKube},
	{Name: StepBlock, Title: "Block the broken version", Checklist: "Broken version blocked in CI/CD pipeline"},
	{Name: StepGitOpsRevert, Title: "Revert in Git and resume the reconciler"},
	{Name: StepSnapshot, Title: "Database snapshot", Checklist: "Database snapshot taken (if migration involved)"},
	{Name: StepDownMig, Title: "Database down migration", Checklist: "Down migration run and verified (if applicable)"},
	{Name: StepSmoke, Title: "Verify pods and smoke tests", Checklist: "Inflight smoke tests passed on rolled-back version", Budget: BudgetVerify},
	{Name: StepMetrics, Title: "Verify metrics", Checklist: "Monitoring dashboards confirm recovery", Budget: BudgetVerify},
	{Name: StepFlagOff, Title: "Feature flag off", Checklist: "Feature flag disabled to prevent re-triggering"},
	{Name: StepClose, Title: "Communicate and close", Checklist: "Incident closed and stakeholders notified of recovery"},
	{Name: StepReview, Title: "Schedule post-incident review", Checklist: "Post-incident review scheduled (within 48 hours)"},
}

// Lookup is the runbook's step of that name (ok false for none).
func Lookup(name string) (Def, bool) {
	for _, d := range Runbook {
		if d.Name == name {
			return d, true
		}
	}
	return Def{}, false
}

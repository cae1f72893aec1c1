package kube

// The Kubernetes rollback's own steps, as Rollback reports them in its
// events (progress.Event.Step).
const (
	StepPlan        = "plan"
	StepMarkBad     = "mark-bad"
	StepConfig      = "config"
	StepUndo        = "undo"
	StepRollout     = "rollout"
	StepVerifyImage = "verify-image"
	StepMark        = "mark"
)

// SubSteps are those steps in the order Rollback takes them, with their
// titles for progress lines.
var SubSteps = []struct{ Name, Title string }{
	{StepPlan, "Plan"},
	{StepMarkBad, "Mark abandoned revision bad"},
	{StepConfig, "Restore ConfigMaps and Secrets"},
	{StepUndo, "Kubernetes undo"},
	{StepRollout, "Wait for rollout"},
	{StepVerifyImage, "Verify running image"},
	{StepMark, "Mark revisions"},
}

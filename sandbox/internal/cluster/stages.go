package cluster

import _ "embed"

// podStages are the simulated node's pod lifecycles: Ready at once, or, by
// the image tag's suffix, crash-looping, never Ready, or failing to pull
// (see stages.yaml).
//
//go:embed stages.yaml
var podStages []byte

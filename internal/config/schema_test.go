package config

import (
	"encoding/json"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// TestSchemaMatchesTypes keeps the published JSON Schema and the Go types
// in step: every field of each type is in the schema and nothing else is.
func TestSchemaMatchesTypes(t *testing.T) {
	b, err := os.ReadFile("../../schema/rollback.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Properties map[string]json.RawMessage `json:"properties"`
		Defs       map[string]struct {
			Properties map[string]json.RawMessage `json:"properties"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("schema is not valid JSON: %v", err)
	}
	check := func(name string, typ reflect.Type, props map[string]json.RawMessage) {
		var want, got []string
		for i := 0; i < typ.NumField(); i++ {
			tag, _, _ := strings.Cut(typ.Field(i).Tag.Get("yaml"), ",")
			if tag != "" && tag != "-" {
				want = append(want, tag)
			}
		}
		for k := range props {
			got = append(got, k)
		}
		sort.Strings(want)
		sort.Strings(got)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: schema has %v, Go type has %v", name, got, want)
		}
	}
	check("root", reflect.TypeOf(Config{}), s.Properties)
	check("service", reflect.TypeOf(Service{}), s.Defs["service"].Properties)
	check("kubernetes", reflect.TypeOf(Kubernetes{}), s.Defs["kubernetes"].Properties)
	check("verify", reflect.TypeOf(Verify{}), s.Defs["verify"].Properties)
	check("smoke", reflect.TypeOf(Smoke{}), s.Defs["smoke"].Properties)
	check("notify", reflect.TypeOf(Notify{}), s.Defs["notify"].Properties)
	check("slackNotify", reflect.TypeOf(SlackNotify{}), s.Defs["slackNotify"].Properties)
	check("pagerdutyNotify", reflect.TypeOf(PagerDutyNotify{}), s.Defs["pagerdutyNotify"].Properties)
	check("flag", reflect.TypeOf(Flag{}), s.Defs["flag"].Properties)
	check("database", reflect.TypeOf(Database{}), s.Defs["database"].Properties)
	check("decide", reflect.TypeOf(Decide{}), s.Defs["decide"].Properties)
	check("webhookNotify", reflect.TypeOf(WebhookNotify{}), s.Defs["webhookNotify"].Properties)
	check("loadBalancer", reflect.TypeOf(LoadBalancer{}), s.Defs["loadBalancer"].Properties)
	check("automation", reflect.TypeOf(Automation{}), s.Defs["automation"].Properties)
	check("autoWatch", reflect.TypeOf(AutoWatch{}), s.Defs["autoWatch"].Properties)
	check("staging", reflect.TypeOf(Staging{}), s.Defs["staging"].Properties)
	check("gitops", reflect.TypeOf(GitOps{}), s.Defs["gitops"].Properties)
	check("forge", reflect.TypeOf(Forge{}), s.Defs["forge"].Properties)
}

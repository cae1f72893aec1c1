// Package albtest is a local stand-in for the ELBv2 API: it speaks the AWS
// query protocol (form-encoded POST, Action and Version=2015-12-01, XML
// responses in the 2015-12-01 namespace) for the operations rollback uses,
// over an in-memory listener, target groups and tags, and checks each
// request as AWS documents it: a SigV4 Authorization header for the
// elasticloadbalancing service, the documented parameters and limits. A
// request it cannot accept gets AWS's XML error and is recorded in Errors.
package albtest

import (
	"encoding/xml"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// TargetGroup is one target group and the states of its targets.
type TargetGroup struct {
	ARN     string
	Targets []string // target health states: healthy, unhealthy, unused, initial, draining
}

// Server is the stand-in.
type Server struct {
	*httptest.Server
	Region, AccessKey string

	mu       sync.Mutex
	listener string
	actions  []action
	groups   map[string]*TargetGroup
	tags     map[string]map[string]string
	Requests []url.Values
	Errors   []string
	// Hang, when set, holds every request until the channel is closed.
	Hang chan struct{}
}

type tgTuple struct {
	ARN    string
	Weight *int
}

type action struct {
	Type   string
	Order  string
	TG     string
	Groups []tgTuple
	Sticky url.Values
}

const ns = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"

// Start serves a listener whose default action forwards to active (weight
// 1), with the other target groups in the forward config at weight 0.
func Start(region, accessKey, listenerARN, active string, groups ...*TargetGroup) *Server {
	s := &Server{Region: region, AccessKey: accessKey, listener: listenerARN, groups: map[string]*TargetGroup{}, tags: map[string]map[string]string{}}
	a := action{Type: "forward", Order: "1"}
	for _, g := range groups {
		s.groups[g.ARN] = g
		w := 0
		if g.ARN == active {
			w = 1
		}
		a.Groups = append(a.Groups, tgTuple{ARN: g.ARN, Weight: &w})
	}
	s.actions = []action{a}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// Weights is the forward action's weights by target group ARN.
func (s *Server) Weights() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for _, a := range s.actions {
		if a.Type != "forward" {
			continue
		}
		if a.TG != "" && len(a.Groups) == 0 {
			out[a.TG] = 1
		}
		for _, g := range a.Groups {
			w := 1
			if g.Weight != nil {
				w = *g.Weight
			}
			out[g.ARN] = w
		}
	}
	return out
}

// Tags are a resource's tags.
func (s *Server) Tags(arn string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for k, v := range s.tags[arn] {
		out[k] = v
	}
	return out
}

// SetTargets sets a target group's target states.
func (s *Server) SetTargets(arn string, states ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.groups[arn].Targets = states
}

// Calls counts the requests of one action.
func (s *Server) Calls(action string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.Requests {
		if r.Get("Action") == action {
			n++
		}
	}
	return n
}

var authRE = regexp.MustCompile(`^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([a-z0-9-]+)/elasticloadbalancing/aws4_request, SignedHeaders=([a-z0-9;-]+), Signature=[0-9a-f]{64}$`)

func (s *Server) fail(w http.ResponseWriter, status int, code, msg string) {
	s.Errors = append(s.Errors, code+": "+msg)
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<ErrorResponse xmlns="%s"><Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>req-err</RequestId></ErrorResponse>`, ns, code, xmlEscape(msg))
}

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if s.Hang != nil {
		select {
		case <-s.Hang:
		case <-r.Context().Done():
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Method != http.MethodPost || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		s.fail(w, 400, "InvalidRequest", "the query protocol is a form-encoded POST, got "+r.Method+" "+r.Header.Get("Content-Type"))
		return
	}
	m := authRE.FindStringSubmatch(r.Header.Get("Authorization"))
	switch {
	case m == nil:
		s.fail(w, 403, "IncompleteSignature", "no SigV4 Authorization header for elasticloadbalancing")
		return
	case m[1] != s.AccessKey:
		s.fail(w, 403, "InvalidClientTokenId", "unknown access key "+m[1])
		return
	case m[3] != s.Region:
		s.fail(w, 403, "SignatureDoesNotMatch", "signed for region "+m[3]+", this endpoint is "+s.Region)
		return
	case r.Header.Get("X-Amz-Date") == "" || !strings.Contains(m[4], "x-amz-date") || !strings.Contains(m[4], "host"):
		s.fail(w, 403, "IncompleteSignature", "X-Amz-Date and host must be signed")
		return
	}
	if err := r.ParseForm(); err != nil {
		s.fail(w, 400, "MalformedQueryString", err.Error())
		return
	}
	f := r.PostForm
	s.Requests = append(s.Requests, f)
	if v := f.Get("Version"); v != "2015-12-01" {
		s.fail(w, 400, "InvalidAction", "Version must be 2015-12-01, got "+v)
		return
	}
	var body string
	var err error
	switch act := f.Get("Action"); act {
	case "DescribeListeners":
		body, err = s.describeListeners(f)
	case "ModifyListener":
		body, err = s.modifyListener(f)
	case "DescribeTargetHealth":
		body, err = s.describeTargetHealth(f)
	case "DescribeTags":
		body, err = s.describeTags(f)
	case "AddTags":
		body, err = s.addTags(f)
	case "RemoveTags":
		body, err = s.removeTags(f)
	default:
		s.fail(w, 400, "InvalidAction", "unsupported action "+act)
		return
	}
	if err != nil {
		code, msg, _ := strings.Cut(err.Error(), ": ")
		s.fail(w, 400, code, msg)
		return
	}
	act := f.Get("Action")
	w.Header().Set("Content-Type", "text/xml")
	fmt.Fprintf(w, `<%sResponse xmlns="%s"><%sResult>%s</%sResult><ResponseMetadata><RequestId>req-1</RequestId></ResponseMetadata></%sResponse>`, act, ns, act, body, act, act)
}

// members are a list parameter's values (Name.member.N), in order.
func members(f url.Values, name string) []string {
	var out []string
	for i := 1; ; i++ {
		v, ok := f[fmt.Sprintf("%s.member.%d", name, i)]
		if !ok {
			return out
		}
		out = append(out, v[0])
	}
}

func (s *Server) listenerXML() string {
	var b strings.Builder
	fmt.Fprintf(&b, "<member><ListenerArn>%s</ListenerArn><Protocol>HTTP</Protocol><Port>80</Port><DefaultActions>", s.listener)
	for _, a := range s.actions {
		fmt.Fprintf(&b, "<member><Type>%s</Type>", a.Type)
		if a.Order != "" {
			fmt.Fprintf(&b, "<Order>%s</Order>", a.Order)
		}
		if a.TG != "" {
			fmt.Fprintf(&b, "<TargetGroupArn>%s</TargetGroupArn>", a.TG)
		}
		if len(a.Groups) > 0 {
			b.WriteString("<ForwardConfig><TargetGroups>")
			for _, g := range a.Groups {
				fmt.Fprintf(&b, "<member><TargetGroupArn>%s</TargetGroupArn>", g.ARN)
				if g.Weight != nil {
					fmt.Fprintf(&b, "<Weight>%d</Weight>", *g.Weight)
				}
				b.WriteString("</member>")
			}
			b.WriteString("</TargetGroups>")
			if a.Sticky.Get("Enabled") != "" {
				fmt.Fprintf(&b, "<TargetGroupStickinessConfig><Enabled>%s</Enabled>", a.Sticky.Get("Enabled"))
				if d := a.Sticky.Get("DurationSeconds"); d != "" {
					fmt.Fprintf(&b, "<DurationSeconds>%s</DurationSeconds>", d)
				}
				b.WriteString("</TargetGroupStickinessConfig>")
			}
			b.WriteString("</ForwardConfig>")
		}
		b.WriteString("</member>")
	}
	b.WriteString("</DefaultActions></member>")
	return b.String()
}

func (s *Server) describeListeners(f url.Values) (string, error) {
	arns := members(f, "ListenerArns")
	if len(arns) != 1 || arns[0] != s.listener {
		return "", fmt.Errorf("ListenerNotFound: One or more listeners not found: %v", arns)
	}
	return "<Listeners>" + s.listenerXML() + "</Listeners>", nil
}

// modifyListener checks DefaultActions as the API reference documents
// them: a forward action names its target groups either by TargetGroupArn
// or by ForwardConfig (both only if the same single group), at most 5 in
// a ForwardConfig, weights 0-999, every group known.
func (s *Server) modifyListener(f url.Values) (string, error) {
	if f.Get("ListenerArn") != s.listener {
		return "", fmt.Errorf("ListenerNotFound: listener %q not found", f.Get("ListenerArn"))
	}
	var acts []action
	for i := 1; ; i++ {
		p := fmt.Sprintf("DefaultActions.member.%d.", i)
		typ := f.Get(p + "Type")
		if typ == "" {
			break
		}
		a := action{Type: typ, Order: f.Get(p + "Order"), TG: f.Get(p + "TargetGroupArn"), Sticky: url.Values{}}
		for j := 1; ; j++ {
			q := fmt.Sprintf("%sForwardConfig.TargetGroups.member.%d.", p, j)
			arn := f.Get(q + "TargetGroupArn")
			if arn == "" {
				break
			}
			t := tgTuple{ARN: arn}
			if w := f.Get(q + "Weight"); w != "" {
				n, err := strconv.Atoi(w)
				if err != nil || n < 0 || n > 999 {
					return "", fmt.Errorf("ValidationError: weight %q of %s is not 0-999", w, arn)
				}
				t.Weight = &n
			}
			a.Groups = append(a.Groups, t)
		}
		for _, k := range []string{"Enabled", "DurationSeconds"} {
			if v := f.Get(p + "ForwardConfig.TargetGroupStickinessConfig." + k); v != "" {
				a.Sticky.Set(k, v)
			}
		}
		if typ == "forward" {
			switch {
			case a.TG == "" && len(a.Groups) == 0:
				return "", fmt.Errorf("ValidationError: a forward action needs TargetGroupArn or ForwardConfig")
			case a.TG != "" && len(a.Groups) > 0 && (len(a.Groups) != 1 || a.Groups[0].ARN != a.TG):
				return "", fmt.Errorf("ValidationError: TargetGroupArn and ForwardConfig name different target groups")
			case len(a.Groups) > 5:
				return "", fmt.Errorf("TooManyTargetGroups: a forward action takes at most 5 target groups")
			}
			for _, g := range append(a.Groups, tgTuple{ARN: a.TG}) {
				if _, ok := s.groups[g.ARN]; g.ARN != "" && !ok {
					return "", fmt.Errorf("TargetGroupNotFound: %s", g.ARN)
				}
			}
		}
		acts = append(acts, a)
	}
	if len(acts) == 0 {
		return "", fmt.Errorf("ValidationError: DefaultActions is empty")
	}
	s.actions = acts
	return "<Listeners>" + s.listenerXML() + "</Listeners>", nil
}

func (s *Server) describeTargetHealth(f url.Values) (string, error) {
	g, ok := s.groups[f.Get("TargetGroupArn")]
	if !ok {
		return "", fmt.Errorf("TargetGroupNotFound: %s", f.Get("TargetGroupArn"))
	}
	var b strings.Builder
	b.WriteString("<TargetHealthDescriptions>")
	for i, st := range g.Targets {
		fmt.Fprintf(&b, "<member><Target><Id>10.0.0.%d</Id><Port>8080</Port></Target><HealthCheckPort>8080</HealthCheckPort><TargetHealth><State>%s</State></TargetHealth></member>", i+1, st)
	}
	b.WriteString("</TargetHealthDescriptions>")
	return b.String(), nil
}

func (s *Server) known(arn string) bool {
	_, ok := s.groups[arn]
	return ok || arn == s.listener
}

func (s *Server) describeTags(f url.Values) (string, error) {
	arns := members(f, "ResourceArns")
	if len(arns) == 0 || len(arns) > 20 {
		return "", fmt.Errorf("ValidationError: ResourceArns takes 1 to 20 ARNs, got %d", len(arns))
	}
	var b strings.Builder
	b.WriteString("<TagDescriptions>")
	for _, arn := range arns {
		if !s.known(arn) {
			return "", fmt.Errorf("TargetGroupNotFound: %s", arn)
		}
		fmt.Fprintf(&b, "<member><ResourceArn>%s</ResourceArn><Tags>", arn)
		keys := make([]string, 0, len(s.tags[arn]))
		for k := range s.tags[arn] {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "<member><Key>%s</Key><Value>%s</Value></member>", xmlEscape(k), xmlEscape(s.tags[arn][k]))
		}
		b.WriteString("</Tags></member>")
	}
	b.WriteString("</TagDescriptions>")
	return b.String(), nil
}

var tagChars = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)

func (s *Server) addTags(f url.Values) (string, error) {
	arns := members(f, "ResourceArns")
	if len(arns) != 1 || !s.known(arns[0]) {
		return "", fmt.Errorf("ValidationError: AddTags here takes one known resource, got %v", arns)
	}
	for i := 1; ; i++ {
		k, ok := f[fmt.Sprintf("Tags.member.%d.Key", i)]
		if !ok {
			break
		}
		v := f.Get(fmt.Sprintf("Tags.member.%d.Value", i))
		switch {
		case len(k[0]) == 0 || len(k[0]) > 128 || !tagChars.MatchString(k[0]) || strings.HasPrefix(k[0], "aws:"):
			return "", fmt.Errorf("ValidationError: invalid tag key %q", k[0])
		case len([]rune(v)) > 256 || !tagChars.MatchString(v):
			return "", fmt.Errorf("ValidationError: invalid tag value %q", v)
		}
		if s.tags[arns[0]] == nil {
			s.tags[arns[0]] = map[string]string{}
		}
		s.tags[arns[0]][k[0]] = v
		if len(s.tags[arns[0]]) > 50 {
			return "", fmt.Errorf("TooManyTags: more than 50 tags on %s", arns[0])
		}
	}
	return "", nil
}

func (s *Server) removeTags(f url.Values) (string, error) {
	arns := members(f, "ResourceArns")
	if len(arns) != 1 || !s.known(arns[0]) {
		return "", fmt.Errorf("ValidationError: RemoveTags here takes one known resource, got %v", arns)
	}
	for _, k := range members(f, "TagKeys") {
		delete(s.tags[arns[0]], k)
	}
	return "", nil
}

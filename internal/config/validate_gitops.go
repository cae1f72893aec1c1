package config

import (
	"net"
	"net/url"
	"strings"

	"gopkg.in/yaml.v3"
)

// gitops validates a service's gitops: section (how the rollback is
// written back to Git).
func (v *validator) gitops(n *yaml.Node, path string) *GitOps {
	g := &GitOps{}
	v.fields(n, path, []string{"revert", "repo", "branch", "path", "tokenEnv", "username", "forge", "wait"}, func(key string, val *yaml.Node) {
		fp := join(path, key)
		switch key {
		case "revert":
			if s, ok := v.str(val, fp); ok {
				if !contains([]string{RevertPush, RevertPullRequest, RevertOff}, s) {
					v.add(val, fp, "%q: expected push, pull-request or off", s)
				}
				g.Revert = s
			}
		case "repo":
			if s, ok := v.str(val, fp); ok {
				if u := v.tokenURL(val, fp, s, "Git URL (SSH remotes are not supported: use the HTTPS one with gitops.tokenEnv)"); u != nil && u.User != nil {
					v.add(val, fp, "the URL carries credentials: remove them and name the token's variable in gitops.tokenEnv")
				}
				g.Repo = s
			}
		case "branch":
			if s, ok := v.str(val, fp); ok {
				if strings.HasPrefix(s, "refs/") || strings.ContainsAny(s, " ~^:?*[\\") || strings.Contains(s, "..") || s == "" || strings.HasSuffix(s, "/") {
					v.add(val, fp, "%q is not a branch name (write main, not refs/heads/main)", s)
				}
				g.Branch = s
			}
		case "path":
			if s, ok := v.str(val, fp); ok {
				if strings.Contains("/"+s+"/", "/../") {
					v.add(val, fp, "%q leaves the repository", s)
				}
				g.Path = s
			}
		case "tokenEnv":
			g.TokenEnv = v.envRef(val, fp)
		case "username":
			g.Username, _ = v.str(val, fp)
		case "forge":
			g.Forge = v.forge(val, fp)
		case "wait":
			g.Wait = v.duration(val, fp)
		}
	})
	if g.Username != "" && g.TokenEnv == "" && n.Kind == yaml.MappingNode {
		v.add(n, path+".tokenEnv", "missing; username goes with the token it names")
	}
	if g.Revert == RevertPullRequest && g.Forge == nil && n.Kind == yaml.MappingNode {
		v.add(n, path+".forge", "missing; revert: pull-request needs the forge that takes it (type, project, tokenEnv)")
	}
	return g
}

func (v *validator) forge(n *yaml.Node, path string) *Forge {
	f := &Forge{}
	v.fields(n, path, []string{"type", "url", "project", "tokenEnv"}, func(key string, val *yaml.Node) {
		fp := join(path, key)
		switch key {
		case "type":
			if s, ok := v.str(val, fp); ok {
				if s != "github" && s != "gitlab" {
					v.add(val, fp, "%q: expected github or gitlab", s)
				}
				f.Type = s
			}
		case "url":
			if s, ok := v.str(val, fp); ok {
				v.tokenURL(val, fp, s, "URL")
				f.URL = s
			}
		case "project":
			f.Project, _ = v.str(val, fp)
		case "tokenEnv":
			f.TokenEnv = v.envRef(val, fp)
		}
	})
	if n.Kind == yaml.MappingNode {
		for field, val := range map[string]string{"type": f.Type, "project": f.Project, "tokenEnv": f.TokenEnv} {
			if val == "" {
				v.add(n, path+"."+field, "missing")
			}
		}
		if f.Type == "github" && f.Project != "" && strings.Count(f.Project, "/") != 1 {
			v.add(n, path+".project", "%q: expected OWNER/REPO for GitHub", f.Project)
		}
	}
	return f
}

// tokenURL checks a URL rollback sends a token to: http(s), and https
// unless it is this machine. It returns the URL when it parses as http(s).
func (v *validator) tokenURL(n *yaml.Node, path, s, what string) *url.URL {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		v.add(n, path, "%q is not an http(s) %s", s, what)
		return nil
	}
	if !secureURL(u) {
		v.add(n, path, "%q: plain http would send the token in clear; use https (http is accepted on loopback only)", s)
	}
	return u
}

// secureURL: https, or http to this machine only.
func secureURL(u *url.URL) bool {
	if u.Scheme == "https" {
		return true
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

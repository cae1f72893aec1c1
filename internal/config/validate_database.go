package config

import (
	"net/url"
	"strconv"

	"gopkg.in/yaml.v3"
)

// The database section: the migrations, the snapshot, and the bucket that
// keeps it.

func (v *validator) snapshotStore(n *yaml.Node, path string) *SnapshotStore {
	st := &SnapshotStore{}
	v.fields(n, path, []string{"url", "endpoint", "region", "accessKeyIdEnv", "secretAccessKeyEnv", "maxBytes"}, func(key string, val *yaml.Node) {
		fp := join(path, key)
		switch key {
		case "url":
			if s, ok := v.str(val, fp); ok {
				if u, err := url.Parse(s); err != nil || u.Scheme != "s3" || u.Host == "" {
					v.add(val, fp, "%q; expected s3://BUCKET[/PREFIX]", s)
				}
				st.URL = s
			}
		case "endpoint":
			if s, ok := v.str(val, fp); ok {
				if u, err := url.Parse(s); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					v.add(val, fp, "%q; expected an http(s) URL of an S3-compatible server", s)
				}
				st.Endpoint = s
			}
		case "region":
			st.Region, _ = v.str(val, fp)
		case "accessKeyIdEnv":
			st.AccessKeyIDEnv = v.envRef(val, fp)
		case "secretAccessKeyEnv":
			st.SecretAccessKeyEnv = v.envRef(val, fp)
		case "maxBytes":
			if s, ok := v.str(val, fp); ok {
				n, err := strconv.ParseInt(s, 10, 64)
				if err != nil || n <= 0 {
					v.add(val, fp, "%q; expected a positive number of bytes", s)
				}
				st.MaxBytes = n
			}
		}
	})
	if n.Kind == yaml.MappingNode && st.URL == "" {
		v.add(n, path+".url", "missing; the bucket as s3://BUCKET[/PREFIX]")
	}
	if (st.AccessKeyIDEnv == "") != (st.SecretAccessKeyEnv == "") {
		v.add(n, path, "accessKeyIdEnv and secretAccessKeyEnv go together")
	}
	return st
}

func (v *validator) database(n *yaml.Node, path string) *Database {
	d := &Database{}
	v.fields(n, path, []string{"dsnEnv", "dir", "format", "snapshot", "snapshotStore"}, func(key string, val *yaml.Node) {
		fp := join(path, key)
		switch key {
		case "dsnEnv":
			d.DSNEnv = v.envRef(val, fp)
		case "dir":
			d.Dir, _ = v.str(val, fp)
		case "format":
			if s, ok := v.str(val, fp); ok {
				if !contains([]string{"auto", "flyway", "golang-migrate"}, s) {
					v.add(val, fp, "unsupported format %q; expected auto, flyway or golang-migrate", s)
				}
				d.Format = s
			}
		case "snapshot":
			if s, ok := v.str(val, fp); ok {
				if !contains([]string{"tables", "full", "none"}, s) {
					v.add(val, fp, "unsupported snapshot %q; expected tables, full or none", s)
				}
				d.Snapshot = s
			}
		case "snapshotStore":
			d.SnapshotStore = v.snapshotStore(val, fp)
		}
	})
	if n.Kind == yaml.MappingNode {
		if d.DSNEnv == "" {
			v.add(n, path+".dsnEnv", "missing; name the environment variable holding the connection string")
		}
		if d.Dir == "" {
			v.add(n, path+".dir", "missing; the directory of migration scripts")
		}
	}
	return d
}

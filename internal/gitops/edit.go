package gitops

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/rollback-dev/rollback/internal/image"
)

// An Edit is one field a revert changes in a file: where, from what to
// what.
type Edit struct {
	File string `json:"file"`
	Line int    `json:"line"`
	// Field is the YAML key edited: image (a manifest's container),
	// newTag or digest (kustomize's images:), tag (Helm values).
	Field string `json:"field"`
	From  string `json:"from"`
	To    string `json:"to"`
}

func (e Edit) String() string {
	return fmt.Sprintf("%s:%d %s %s -> %s", e.File, e.Line, e.Field, e.From, e.To)
}

// EditImages puts the good image back where a YAML file names the bad one,
// changing exactly those scalars and nothing else in the file (comments,
// order, quoting and every other byte stay): a manifest's `image:`
// (registry hosts with ports, tags and digests as the registry grammar
// reads them), kustomize's `images:` entries (`name` with `newTag` or
// `digest`), and Helm values (`repository` beside `tag`). A file that is
// not YAML is an error; one without the bad image is returned unchanged
// with no edits.
func EditImages(file string, content []byte, bad, good image.Ref) ([]byte, []Edit, error) {
	if bad.Canonical == "" || good.Canonical == "" {
		return nil, nil, errors.New("edit images: the bad and the good image must both be known")
	}
	var found []scalarEdit
	dec := yaml.NewDecoder(bytes.NewReader(content))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: not YAML: %w", file, err)
		}
		walk(&doc, func(m *yaml.Node) { found = append(found, imageFields(m, bad, good)...) })
	}
	if len(found) == 0 {
		return content, nil, nil
	}
	for _, f := range found {
		if f.err != nil {
			return nil, nil, fmt.Errorf("%s: %w", file, f.err)
		}
	}
	out, err := replaceScalars(content, found)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", file, err)
	}
	edits := make([]Edit, len(found))
	for i, f := range found {
		edits[i] = Edit{File: file, Line: f.node.Line, Field: f.field, From: f.node.Value, To: f.to}
	}
	return out, edits, nil
}

type scalarEdit struct {
	node  *yaml.Node
	field string
	to    string
	err   error // a field that names the bad image and cannot be edited
}

func walk(n *yaml.Node, mapping func(*yaml.Node)) {
	if n.Kind == yaml.MappingNode {
		mapping(n)
	}
	for _, c := range n.Content {
		walk(c, mapping)
	}
}

// get is the scalar value of key in mapping m (nil when absent or not a
// scalar).
func get(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key && m.Content[i+1].Kind == yaml.ScalarNode {
			return m.Content[i+1]
		}
	}
	return nil
}

// sameRepo says whether a repository as written names bad's repository.
func sameRepo(name string, bad image.Ref) bool {
	r, err := image.Parse(name)
	return err == nil && r.Canonical == bad.Canonical
}

// imageFields finds the fields of mapping m that name the bad image.
func imageFields(m *yaml.Node, bad, good image.Ref) []scalarEdit {
	var out []scalarEdit
	// A manifest's container (or any `image:` written whole).
	if n := get(m, "image"); n != nil && n.Tag == "!!str" {
		if r, err := image.Parse(n.Value); err == nil && r.Canonical == bad.Canonical && r.Version() == bad.Version() && (bad.Tag == "" || r.Tag == bad.Tag) {
			out = append(out, scalarEdit{node: n, field: "image", to: rewrite(n.Value, r, good)})
		}
	}
	// kustomize images: {name, newName?, newTag?, digest?}
	if name := get(m, "name"); name != nil && (get(m, "newTag") != nil || get(m, "digest") != nil) {
		repo := name.Value
		if nn := get(m, "newName"); nn != nil {
			repo = nn.Value
		}
		if sameRepo(repo, bad) {
			t, d := get(m, "newTag"), get(m, "digest")
			tagBad := t != nil && bad.Tag != "" && t.Value == bad.Tag
			digestBad := d != nil && bad.Digest != "" && d.Value == bad.Digest
			if tagBad || digestBad {
				// Both fields must name the good image afterwards: a
				// digest left beside a reverted tag still pulls the bad
				// bits, and a field the good image lacks cannot be
				// emptied by an edit in place.
				for _, f := range []struct {
					n          *yaml.Node
					field, val string
				}{{t, "newTag", good.Tag}, {d, "digest", good.Digest}} {
					switch {
					case f.n == nil:
					case f.val == "":
						out = append(out, scalarEdit{node: f.n, field: f.field, err: fmt.Errorf("line %d: kustomize images: %s has %s %s and the good image %s none: edit by hand", f.n.Line, repo, f.field, f.n.Value, good.Version())})
					case f.n.Value != f.val:
						out = append(out, scalarEdit{node: f.n, field: f.field, to: f.val})
					}
				}
			}
		}
	}
	// Helm values: {repository, tag}
	if repo := get(m, "repository"); repo != nil && sameRepo(repo.Value, bad) {
		if t := get(m, "tag"); t != nil && bad.Tag != "" && t.Value == bad.Tag && good.Tag != "" {
			out = append(out, scalarEdit{node: t, field: "tag", to: good.Tag})
		}
	}
	return out
}

// rewrite is the good image written the way written (which parsed as r)
// was: the same repository spelling, with the good tag and/or digest.
func rewrite(written string, r image.Ref, good image.Ref) string {
	s := written
	if r.Digest != "" {
		s = strings.TrimSuffix(s, "@"+r.Digest)
	}
	if r.Tag != "" {
		s = strings.TrimSuffix(s, ":"+r.Tag)
	}
	if good.Tag != "" {
		s += ":" + good.Tag
	}
	if good.Digest != "" {
		s += "@" + good.Digest
	}
	if good.Tag == "" && good.Digest == "" {
		s += ":latest"
	}
	return s
}

// replaceScalars rewrites each scalar in place in the source bytes, by the
// line and column yaml.v3 reports, keeping its quoting.
func replaceScalars(src []byte, edits []scalarEdit) ([]byte, error) {
	lineStart := []int{0}
	for i, b := range src {
		if b == '\n' {
			lineStart = append(lineStart, i+1)
		}
	}
	type span struct {
		from, to int
		text     string
	}
	var spans []span
	for _, e := range edits {
		n := e.node
		if n.Line < 1 || n.Line > len(lineStart) {
			return nil, fmt.Errorf("line %d: out of range", n.Line)
		}
		// Columns count characters; a line before the scalar may hold
		// multi-byte ones.
		ls := lineStart[n.Line-1]
		off := ls
		for col := 1; col < n.Column && off < len(src); col++ {
			_, size := utf8.DecodeRune(src[off:])
			off += size
		}
		end, text, err := scalarExtent(src, off, n, e.to)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n.Line, err)
		}
		spans = append(spans, span{off, end, text})
	}
	var out bytes.Buffer
	last := 0
	// Edits come in document order; keep them so and refuse overlaps.
	for i := 1; i < len(spans); i++ {
		for j := i; j > 0 && spans[j].from < spans[j-1].from; j-- {
			spans[j], spans[j-1] = spans[j-1], spans[j]
		}
	}
	for _, s := range spans {
		if s.from < last {
			return nil, errors.New("overlapping edits")
		}
		out.Write(src[last:s.from])
		out.WriteString(s.text)
		last = s.to
	}
	out.Write(src[last:])
	return out.Bytes(), nil
}

// scalarExtent is where the scalar at off ends in src and its new text in
// the same style.
func scalarExtent(src []byte, off int, n *yaml.Node, to string) (int, string, error) {
	switch n.Style {
	case yaml.DoubleQuotedStyle:
		if off >= len(src) || src[off] != '"' {
			return 0, "", errors.New("double-quoted scalar not where the parser put it")
		}
		for i := off + 1; i < len(src); i++ {
			switch src[i] {
			case '\\':
				i++
			case '"':
				return i + 1, fmt.Sprintf("%q", to), nil
			}
		}
		return 0, "", errors.New("unterminated double-quoted scalar")
	case yaml.SingleQuotedStyle:
		if off >= len(src) || src[off] != '\'' {
			return 0, "", errors.New("single-quoted scalar not where the parser put it")
		}
		for i := off + 1; i < len(src); i++ {
			if src[i] == '\'' {
				if i+1 < len(src) && src[i+1] == '\'' {
					i++
					continue
				}
				return i + 1, "'" + strings.ReplaceAll(to, "'", "''") + "'", nil
			}
		}
		return 0, "", errors.New("unterminated single-quoted scalar")
	case 0:
		if !bytes.HasPrefix(src[off:], []byte(n.Value)) {
			return 0, "", fmt.Errorf("plain scalar %q not where the parser put it (an anchor or a tag before it): edit by hand", n.Value)
		}
		// A plain scalar that would read as a number, a bool or null
		// (tag 1.10 is the float 1.1) is written quoted.
		if !isString(to) {
			return off + len(n.Value), fmt.Sprintf("%q", to), nil
		}
		return off + len(n.Value), to, nil
	}
	return 0, "", fmt.Errorf("scalar %q in a block or folded style: edit it by hand", n.Value)
}

// isString says whether to, written plain, reads back as that string.
func isString(to string) bool {
	var m map[string]any
	if err := yaml.Unmarshal([]byte("v: "+to), &m); err != nil {
		return false
	}
	got, ok := m["v"].(string)
	return ok && got == to
}

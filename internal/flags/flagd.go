package flags

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Flagd turns flags off in a flagd flag definition file: the flag's
// defaultVariant becomes its variant whose value is false (and its
// targeting is removed, so no rule turns it back on); a flag without such a
// variant gets state DISABLED. The file is rewritten atomically (a
// temporary file in the same directory, then rename; through symlinks to
// the real file), keeping every other flag and field as it was.
type Flagd struct {
	Path string
}

var _ Provider = (*Flagd)(nil)

// ErrNoFlag means the file does not define the flag.
var ErrNoFlag = errors.New("flag not defined")

func (f *Flagd) read() (map[string]any, map[string]any, error) {
	b, err := os.ReadFile(f.Path)
	if err != nil {
		return nil, nil, err
	}
	var doc map[string]any
	// json.Number keeps other flags' numbers exactly as written (no
	// float64 round trip of 12345678901234567890 or 0.1).
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, nil, fmt.Errorf("%s: not a flagd JSON file: %w", f.Path, err)
	}
	flags, ok := doc["flags"].(map[string]any)
	if !ok {
		return nil, nil, fmt.Errorf("%s: no \"flags\" object", f.Path)
	}
	return doc, flags, nil
}

// TurnOff implements Provider.
func (f *Flagd) TurnOff(_ context.Context, flag, _ string) error {
	doc, flags, err := f.read()
	if err != nil {
		return err
	}
	def, ok := flags[flag].(map[string]any)
	if !ok {
		return fmt.Errorf("%w: %s in %s", ErrNoFlag, flag, f.Path)
	}
	offVariant := ""
	if vs, ok := def["variants"].(map[string]any); ok {
		for name, v := range vs {
			if b, ok := v.(bool); ok && !b {
				offVariant = name
			}
		}
	}
	if offVariant != "" {
		def["defaultVariant"] = offVariant
		delete(def, "targeting")
		def["state"] = "ENABLED"
	} else {
		def["state"] = "DISABLED"
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	// The file may be a symlink (as ConfigMap mounts are): the real file
	// is replaced, in its own directory, and the link is left as it is.
	real, err := filepath.EvalSymlinks(f.Path)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(real), ".flagd-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if st, err := os.Stat(real); err == nil {
		_ = tmp.Chmod(st.Mode().Perm())
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), real)
}

// IsOn implements Provider: a flag is on unless it is DISABLED or its
// default variant's value is false with no targeting.
func (f *Flagd) IsOn(_ context.Context, flag string) (bool, error) {
	_, flags, err := f.read()
	if err != nil {
		return false, err
	}
	def, ok := flags[flag].(map[string]any)
	if !ok {
		return false, fmt.Errorf("%w: %s in %s", ErrNoFlag, flag, f.Path)
	}
	if def["state"] == "DISABLED" {
		return false, nil
	}
	if _, hasTargeting := def["targeting"]; hasTargeting {
		return true, nil
	}
	vs, _ := def["variants"].(map[string]any)
	dv, _ := def["defaultVariant"].(string)
	if b, ok := vs[dv].(bool); ok {
		return b, nil
	}
	return true, nil
}

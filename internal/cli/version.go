package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

type versionInfo struct {
	Version   string `json:"version"`
	GoVersion string `json:"goVersion"`
	ClientGo  string `json:"clientGo,omitempty"`
	Platform  string `json:"platform"`
}

func newVersionCmd(f *Factory) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "Print the version of rollback",
		Example: "  rollback version\n  rollback version -o json",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := outputFormat(output)
			if err != nil {
				return err
			}
			v := versionInfo{Version: Version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
			if bi, ok := debug.ReadBuildInfo(); ok {
				// 'go install github.com/rollback-dev/rollback/cmd/rollback@v1.2.3'
				// stamps the module's version; a release build sets Version.
				if v.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
					v.Version = bi.Main.Version
				}
				for _, d := range bi.Deps {
					if d.Path == "k8s.io/client-go" {
						v.ClientGo = d.Version
					}
				}
			}
			if format != "" {
				return printStructured(f.IO.Out, format, v)
			}
			fmt.Fprintf(f.IO.Out, "rollback %s (%s, %s, client-go %s)\n", v.Version, v.GoVersion, v.Platform, v.ClientGo)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json or yaml")
	return cmd
}

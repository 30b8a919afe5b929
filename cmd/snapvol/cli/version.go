package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"github.com/snapvol/snapvol/admin"
	"github.com/snapvol/snapvol/version"
)

// versionCommand is snapvol version, as docker version: the command's own
// build (Client), then the running plugin's (Server), asked over the
// admin socket, so after an upgrade it says what actually serves. With no
// plugin answering it prints the client and fails for the server part.
func versionCommand(client func() *admin.Client, stateDir *string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Show the version and commit of this command and of the running plugin",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			v, commit := version.Get()
			exe, _ := os.Executable()
			cl := admin.VersionInfo{Version: v, Commit: commit, Go: runtime.Version()}
			srv, err := client().Version()
			if asJSON {
				out := struct {
					Client admin.VersionInfo  `json:"client"`
					Server *admin.VersionInfo `json:"server"`
				}{Client: cl}
				if err == nil {
					out.Server = &srv
				}
				enc := json.NewEncoder(c.OutOrStdout())
				enc.SetIndent("", "  ")
				if perr := enc.Encode(out); perr != nil {
					return perr
				}
			} else {
				w := c.OutOrStdout()
				fmt.Fprintf(w, "Client:\n Version:  %s\n Commit:   %s\n Go:       %s\n Binary:   %s\n", cl.Version, cl.Commit, cl.Go, exe)
				if err == nil {
					printServer(w, srv, *stateDir)
				}
			}
			if err != nil {
				return fmt.Errorf("server: %w", err)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"client": ..., "server": ...} (server null when no plugin answers)`)
	return cmd
}

func printServer(w io.Writer, s admin.VersionInfo, stateDir string) {
	fmt.Fprintf(w, "\nServer: (the plugin serving STATE_DIR %s)\n Version:  %s\n Commit:   %s\n Go:       %s\n Backend:  %s\n",
		stateDir, s.Version, s.Commit, s.Go, s.Backend)
	if !s.Started.IsZero() {
		fmt.Fprintf(w, " Started:  %s (up %s)\n", s.Started.Format(time.RFC3339), short(time.Since(s.Started)))
	}
}

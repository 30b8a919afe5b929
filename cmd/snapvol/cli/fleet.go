package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/snapvol/snapvol/admin"
)

// fleetCommands are snapvol push and snapvol pull (docs/fleets.md).
func fleetCommands(client func() *admin.Client) []*cobra.Command {
	var pushJSON, pullJSON bool
	push := &cobra.Command{
		Use:   "push SOURCE@REF REGISTRY/REPO[:TAG]",
		Short: "Publish a named snapshot to a registry for other hosts (PUBLISH must allow it; TAG defaults to REF)",
		Args:  cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			res, err := client().Push(args[0], args[1])
			if err != nil {
				return err
			}
			if pushJSON {
				return printJSON(c.OutOrStdout(), res)
			}
			how := "incremental"
			if res.Full {
				how = "full"
			}
			if len(res.Uploaded) == 0 && res.Bytes == 0 {
				how = "nothing new"
			}
			fmt.Fprintf(c.OutOrStdout(), "%s:%s %s: %d layers, %d uploaded (%s, %s)\n", res.Repository, res.Tag, res.Digest, res.Layers, len(res.Uploaded), human(res.Bytes), how)
			return nil
		},
	}
	push.Flags().BoolVar(&pushJSON, "json", false, "print the result as JSON")
	pull := &cobra.Command{
		Use:   "pull SOURCE[@TAG]",
		Short: "Fetch a replica source's newest version now (every tag of its repository without @TAG)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			res, err := client().Pull(args[0])
			if err != nil {
				return err
			}
			if pullJSON {
				return printJSON(c.OutOrStdout(), res)
			}
			tw := table(c.OutOrStdout(), "SOURCE", "TAG", "UUID", "TIME", "LAYERS APPLIED", "BYTES", "NEW")
			for _, t := range res.Tags {
				row(tw, res.Source, t.Tag, t.UUID, t.Time.Format("2006-01-02T15:04:05Z07:00"), fmt.Sprint(t.Applied), human(t.Bytes), fmt.Sprint(t.New))
			}
			return tw.Flush()
		},
	}
	pull.Flags().BoolVar(&pullJSON, "json", false, "print the result as JSON")
	return []*cobra.Command{push, pull}
}

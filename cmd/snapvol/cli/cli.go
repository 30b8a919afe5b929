// Package cli is the snapvol command: every word but serve (and recover)
// talks to the running plugin over its admin socket in STATE_DIR. It links
// only the admin client and its wire types, never the daemon (the driver,
// bbolt, the backends, Prometheus, protobuf), so the command starts in a
// few milliseconds: cmd/snapvol is this package alone, and reaches the
// daemon, snapvold, by exec. The daemon binary (./plugin, the managed
// plugin's /snapvol) links this package too, with its serve and recover
// built in: one binary that both serves and answers every command.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/snapvol/snapvol/admin"
)

// DefaultStateDir is STATE_DIR when neither --state-dir nor the STATE_DIR
// environment variable says (the plugin's own default).
const DefaultStateDir = "/var/lib/snapvol"

// Daemon is what only the daemon does; the command alone execs snapvold
// for it.
type Daemon struct {
	// Serve runs the plugin until SIGTERM (snapvol with no arguments,
	// snapvol serve).
	Serve func() error
	// Recover rebuilds snapvol.db from the pool (snapvol recover).
	Recover func(out io.Writer, stateDir string, force bool) error
}

// New returns the snapvol command. Help, version, a bad flag or a typo
// never start the daemon: only no arguments, serve and recover run d.
func New(stdout, stderr io.Writer, d Daemon) *cobra.Command {
	stateDir := os.Getenv("STATE_DIR")
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	client := func() *admin.Client { return admin.NewClient(admin.SocketPath(stateDir)) }
	root := &cobra.Command{
		Use:   "snapvol",
		Short: "Docker volume plugin: writable copy-on-write clones of production volumes, by name",
		Long: `snapvol is a Docker volume plugin: a volume named SOURCE@REF (app-production@latest)
is a fresh writable clone of SOURCE. Run with no arguments (or "snapvol serve") it is
the plugin; the other commands talk to the running plugin over its admin socket in
STATE_DIR (--state-dir, or the STATE_DIR environment variable; default /var/lib/snapvol).`,
		Args:          noArgsOrSuggest,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          func(*cobra.Command, []string) error { return d.Serve() },
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&stateDir, "state-dir", stateDir, "STATE_DIR of the running snapvol (where its admin socket is)")
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(&cobra.Command{
		Use: "serve", Short: "Run the plugin (what snapvol with no arguments does)", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return d.Serve() },
	})
	root.AddCommand(versionCommand(client, &stateDir), lsCommand(client), dfCommand(client),
		metricsCommand(client, &stateDir), volumeCommand(client), snapshotCommand(client),
		recoverCommand(d.Recover, &stateDir))
	root.AddCommand(fleetCommands(client)...) // fleet.go: push, pull (issue 23)
	return root
}

// noArgsOrSuggest refuses arguments to a command that takes none (the
// root, volume, snapshot), suggesting the subcommand meant: cobra
// suggests only for commands without an Args check (snapvol sl: did you
// mean ls?).
func noArgsOrSuggest(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
	c.SuggestionsMinimumDistance = 2 // sl -> ls, lss -> ls
	s := c.SuggestionsFor(args[0])
	for _, g := range c.Commands() {
		// snapvol inspect: did you mean volume inspect?
		for _, sub := range g.Commands() {
			if sub.Name() == args[0] {
				s = append(s, g.Name()+" "+sub.Name())
			}
		}
	}
	if len(s) > 0 {
		msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t")
	}
	return errors.New(msg + "\n\nRun '" + c.CommandPath() + " --help' for usage.")
}

// group is a command whose words are subcommands (volume, snapshot).
func group(use, short string) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Args: noArgsOrSuggest,
		RunE: func(c *cobra.Command, _ []string) error { return c.Help() }}
}

func recoverCommand(run func(io.Writer, string, bool) error, stateDir *string) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "recover",
		Short: "Rebuild snapvol.db from the pool's labels (with the plugin stopped); see docs/recover.md",
		Long: `Rebuilds the records of STATE_DIR/snapvol.db from the labels snapvol puts on every
object it makes: plain volumes, clone volumes with their clones and snapshots, and named
snapshots (SOURCE@NAME). Mounts that containers hold now are counted, so no clone is
destroyed under a running container. The old snapvol.db and snapvol.store are kept,
renamed *.before-recover-TIME. Run it with the plugin stopped and the same settings
(environment) the plugin runs with; then start the plugin.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return run(c.OutOrStdout(), *stateDir, force) },
	}
	cmd.Flags().BoolVar(&force, "force", false, "rebuild even though snapvol.db opens and holds records")
	return cmd
}

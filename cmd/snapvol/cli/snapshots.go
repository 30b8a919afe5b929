package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/snapvol/snapvol/admin"
)

func snapshotCommand(client func() *admin.Client) *cobra.Command {
	snap := group("snapshot", "Named and scheduled snapshots of a source")
	var from string
	var replace bool
	create := &cobra.Command{
		Use:   "create SOURCE NAME [--from VOLUME] [--replace]",
		Short: "Snapshot SOURCE (or VOLUME, a clone of it, e.g. after masking) as SOURCE@NAME",
		Args:  cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			s, err := client().CreateSnapshot(args[0], args[1], from, replace)
			if err != nil {
				return err
			}
			what := s.Source
			if s.From != "" {
				what = s.From
			}
			fmt.Fprintf(c.OutOrStdout(), "%s@%s: snapshot of %s at %s\n", s.Source, s.Name, what, s.Time.Format(time.RFC3339))
			return nil
		},
	}
	create.Flags().StringVar(&from, "from", "", "a clone volume of SOURCE to snapshot instead of SOURCE itself")
	create.Flags().BoolVar(&replace, "replace", false, "move the name if it exists; clones of the old snapshot keep their data")
	rm := &cobra.Command{
		Use: "rm SOURCE NAME", Short: "Delete snapshot SOURCE@NAME (refused while clones use it)", Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			if err := client().RemoveSnapshot(args[0], args[1]); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "%s@%s: removed\n", args[0], args[1])
			return nil
		},
	}
	snap.AddCommand(create, snapshotLsCommand(client), rm, scheduleCommand(client))
	return snap
}

func snapshotLsCommand(client func() *admin.Client) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls SOURCE",
		Short: "List the snapshots of SOURCE (name, time, kind, clones using it) and its schedule",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			snaps, err := client().Snapshots(args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(c.OutOrStdout(), snaps)
			}
			sc, ok, err := client().Schedule(args[0])
			if err != nil {
				return err
			}
			out := c.OutOrStdout()
			fmt.Fprintln(out, scheduleLine(sc, ok, args[0]))
			tw := table(out, "NAME", "TIME", "KIND", "FROM", "CLONES")
			for _, s := range snaps {
				row(tw, s.Name, s.Time.Format(time.RFC3339), s.Kind, s.From, strings.Join(s.Clones, ","))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array (the schedule: snapshot schedule SOURCE --json)")
	return cmd
}

// scheduleLine says a source's schedule in one line.
func scheduleLine(sc admin.Schedule, ok bool, source string) string {
	if !ok {
		return fmt.Sprintf("%s: no schedule (snapvol snapshot schedule %s --every 1h --keep 24)", source, source)
	}
	last := "none taken yet"
	if !sc.Last.IsZero() {
		last = "last " + sc.Last.Format(time.RFC3339)
	}
	line := fmt.Sprintf("%s: a snapshot every %s, the newest %d kept (%s)", source, sc.Every, sc.Keep, last)
	if sc.Push == "" {
		return line
	}
	line += "; each pushed to " + sc.Push
	switch {
	case sc.PushError != "":
		line += fmt.Sprintf("\nthe push at %s FAILED (retried with the next snapshot): %s", sc.PushTried.Format(time.RFC3339), sc.PushError)
	case !sc.Pushed.IsZero():
		line += " (last pushed " + sc.Pushed.Format(time.RFC3339) + ")"
	default:
		line += " (none pushed yet)"
	}
	return line
}

func scheduleCommand(client func() *admin.Client) *cobra.Command {
	var every time.Duration
	var keep int
	var off, asJSON bool
	var push string
	cmd := &cobra.Command{
		Use:   "schedule SOURCE [--every DURATION --keep N [--push REGISTRY/REPO[:TAG]] | --off]",
		Short: "Show SOURCE's schedule, or snapshot it on one, keeping the newest N scheduled snapshots",
		Long: `With no flags, shows SOURCE's schedule. --every and --keep set it: a snapshot of SOURCE
every DURATION, the newest N scheduled ones kept (named snapshots are never expired by it).
--push also pushes each scheduled snapshot to the registry once taken, as snapvol push does
(TAG defaults to "scheduled"); PUBLISH must allow SOURCE@scheduled-* (their names), or the
schedule is refused. A failed push is logged and shown here, and the next snapshot is
pushed at the next tick. --off turns it off; its snapshots stay.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			source, out := args[0], c.OutOrStdout()
			set := c.Flags().Changed("every") || c.Flags().Changed("keep")
			switch {
			case off && (set || push != ""):
				return errors.New("--off turns the schedule off; it takes no --every, --keep or --push")
			case push != "" && !set:
				return errors.New("--push goes with --every DURATION and --keep N: it pushes the snapshots a schedule takes")
			case off:
				if err := client().ClearSchedule(source); err != nil {
					return err
				}
				fmt.Fprintf(out, "%s: no schedule (its snapshots stay)\n", source)
				return nil
			case set && (every == 0 || keep == 0):
				return errors.New("give --every DURATION and --keep N together, or --off")
			case set:
				set := client().SetSchedule
				if push != "" {
					set = func(source string, every time.Duration, keep int) (admin.Schedule, error) {
						return client().SetPushedSchedule(source, every, keep, push)
					}
				}
				sc, err := set(source, every, keep)
				if err != nil {
					return err
				}
				return showSchedule(out, sc, true, source, asJSON)
			}
			sc, ok, err := client().Schedule(source)
			if err != nil {
				return err
			}
			return showSchedule(out, sc, ok, source, asJSON)
		},
	}
	cmd.Flags().DurationVar(&every, "every", 0, "how often (a Go duration: 1h, 30m, 1s)")
	cmd.Flags().IntVar(&keep, "keep", 0, "how many scheduled snapshots to keep")
	cmd.Flags().BoolVar(&off, "off", false, "turn the schedule off (its snapshots stay)")
	cmd.Flags().StringVar(&push, "push", "", "push each scheduled snapshot to REGISTRY/REPO[:TAG] (TAG default: scheduled; PUBLISH must allow SOURCE@scheduled-*)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the schedule as a JSON object (null: none)")
	return cmd
}

func showSchedule(w io.Writer, sc admin.Schedule, ok bool, source string, asJSON bool) error {
	if !asJSON {
		_, err := fmt.Fprintln(w, scheduleLine(sc, ok, source))
		return err
	}
	if !ok {
		_, err := fmt.Fprintln(w, "null")
		return err
	}
	return printJSON(w, sc)
}

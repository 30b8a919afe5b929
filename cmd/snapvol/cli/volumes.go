package cli

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/snapvol/snapvol/admin"
)

func lsCommand(client func() *admin.Client) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List volumes: kind, what they clone, mounts, state, expiry, size (details: --json, volume inspect)",
		Long: `Lists every volume in 100 columns: NAME, KIND (volume, clone, operator), FROM (SOURCE@REF of a
clone), MOUNTS, STATE (ready, cloned, no clone, pending), EXPIRES and SIZE (what the volume
holds alone). EXPIRES says when an idle clone is destroyed: "in 3h" (unmounted), "idle 24h"
(mounted: that long after its last unmount), "unmount" (+each: every clone at its
container's unmount), "never". --json prints every field of every volume (snapvol volume
inspect NAME: one volume).

On a CI host a REPLICAS section follows: each replica source's tags pulled, how old the
production snapshot is, when a pull last worked and whether the registry answers (every
field: snapvol replica ls). A schedule whose last push failed is shown last.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if asJSON {
				// The plugin's answer is the array, a volume a line:
				// copied through, not decoded and encoded again.
				w := bufio.NewWriterSize(c.OutOrStdout(), 64<<10)
				if err := client().VolumesJSON(w); err != nil {
					return err
				}
				return w.Flush()
			}
			vols, err := client().Volumes()
			if err != nil {
				return err
			}
			now := time.Now()
			if err := printVolumes(c, vols, now); err != nil {
				return err
			}
			// A CI host's replica sources, and production's failing
			// scheduled pushes: what an operator looks for first.
			reps, err := client().Replicas()
			if err != nil {
				return fmt.Errorf("listing replica sources: %w", err)
			}
			if err := printReplicas(c.OutOrStdout(), reps, now); err != nil {
				return err
			}
			scs, err := client().Schedules()
			if err != nil {
				return fmt.Errorf("listing schedules: %w", err)
			}
			return printPushFailures(c.OutOrStdout(), scs, now)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array: every field of every volume")
	return cmd
}

func printVolumes(c *cobra.Command, vols []admin.Volume, now time.Time) error {
	w := bufio.NewWriterSize(c.OutOrStdout(), 64<<10)
	tw := table(w, "NAME", "KIND", "FROM", "MOUNTS", "STATE", "EXPIRES", "SIZE")
	for _, v := range vols {
		from := ""
		if v.Source != "" {
			from = v.Source + "@" + v.Ref
		}
		row(tw, v.Name, v.Kind, from, fmt.Sprint(v.Mounts), shortState(v.State), expires(v, now), sizeOf(v.Bytes))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return w.Flush()
}

// shortState is the table's word for a volume's state (--json has the
// full one: materialized, not materialized, pending OP).
func shortState(s string) string {
	switch {
	case s == "materialized":
		return "cloned"
	case s == "not materialized":
		return "no clone"
	case strings.HasPrefix(s, "pending "):
		return "pending"
	}
	return s
}

// expires is the EXPIRES column: a word or a short duration, never a
// sentence (the sentence is in snapvol ls --help and docs/operator.md).
func expires(v admin.Volume, now time.Time) string {
	switch {
	case v.TTLSeconds == nil || v.State == "not materialized":
		return "-"
	case v.Each:
		return "unmount"
	case *v.TTLSeconds == 0:
		return "never"
	case v.Mounts > 0:
		return "idle " + short(time.Duration(*v.TTLSeconds)*time.Second)
	case v.Expires.IsZero():
		return "-"
	case !v.Expires.After(now):
		return "now"
	}
	return "in " + short(v.Expires.Sub(now))
}

// short is a duration in at most two units: 45s, 12m, 3h20m, 26h, 3d.
func short(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", d/time.Second)
	case d < time.Hour:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d < 10*time.Hour && d%time.Hour >= time.Minute:
		return fmt.Sprintf("%dh%dm", d/time.Hour, d%time.Hour/time.Minute)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return fmt.Sprintf("%dd", d/(24*time.Hour))
}

func inspectCommand(client func() *admin.Client) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect NAME...",
		Short: "Show every field of volumes as a JSON array (what snapvol ls --json prints for them)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			out := make([]admin.Volume, 0, len(args))
			var errs []error
			for _, name := range args {
				v, err := client().Volume(name)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				out = append(out, v)
			}
			if err := printJSON(c.OutOrStdout(), out); err != nil {
				return err
			}
			return errors.Join(errs...)
		},
	}
}

func dfCommand(client func() *admin.Client) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use: "df", Short: "Show the pool: size, used, free, reserve, largest consumers, replica sources", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			u, err := client().UsageWithReplicas()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(c.OutOrStdout(), u)
			}
			return printUsage(c, u)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON object")
	return cmd
}

func printUsage(c *cobra.Command, u admin.DiskUsage) error {
	out := c.OutOrStdout()
	tw := table(out, "SIZE", "USED", "FREE", "RESERVE")
	row(tw, human(u.Size), human(u.Used), human(u.Free), human(u.Reserve))
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(u.Consumers) > 0 {
		fmt.Fprintln(out)
		tw = table(out, "VOLUME", "KIND", "SIZE")
		for _, v := range u.Consumers {
			row(tw, v.Name, v.Kind, human(v.Bytes))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(u.Pinned) == 0 {
		return printReplicas(out, u.Replicas, time.Now())
	}
	// Old data of a source that only snapshots and clones still hold:
	// billed to the source, freed by removing them.
	fmt.Fprintln(out)
	fmt.Fprintln(out, "PINNED: old data of sources kept alive by snapshots and idle clones")
	tw = table(out, "SOURCE", "SNAPSHOT", "EXCLUSIVE", "SHARED", "CLONES")
	for _, p := range u.Pinned {
		snap := p.Snapshot
		if snap == "" {
			snap = "(all)"
		}
		row(tw, p.Source, snap, human(p.Bytes), human(p.Shared), strings.Join(p.Clones, ","))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return printReplicas(out, u.Replicas, time.Now())
}

func printJSON(w interface{ Write([]byte) (int, error) }, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

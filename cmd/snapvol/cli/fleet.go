package cli

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

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
	return []*cobra.Command{push, pull, replicaCommand(client)}
}

// replicaCommand is snapvol replica ls: every field of the replica
// sources, which snapvol ls and df sum up in 100 columns.
func replicaCommand(client func() *admin.Client) *cobra.Command {
	rep := group("replica", "Replica sources (REPLICAS): what was pulled from the registry, and how old it is")
	var asJSON bool
	ls := &cobra.Command{
		Use:   "ls [SOURCE...]",
		Short: "List replica sources: repository, each tag's version (production time, age, UUID), last pull and its error",
		RunE: func(c *cobra.Command, args []string) error {
			reps, err := client().Replicas()
			if err != nil {
				return err
			}
			if reps, err = onlySources(reps, args); err != nil {
				return err
			}
			if asJSON {
				return printJSON(c.OutOrStdout(), reps)
			}
			return printReplicaDetails(c.OutOrStdout(), reps, time.Now())
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print a JSON array: every field of every replica source")
	rep.AddCommand(ls)
	return rep
}

// onlySources keeps the replica sources named (all with no names); a
// name that is none is an error.
func onlySources(reps []admin.Replica, names []string) ([]admin.Replica, error) {
	if len(names) == 0 {
		return reps, nil
	}
	out := []admin.Replica{}
	for _, n := range names {
		found := false
		for _, r := range reps {
			if r.Source == n {
				out, found = append(out, r), true
			}
		}
		if !found {
			return nil, fmt.Errorf("%q is not a replica source on this host (REPLICAS names them)", n)
		}
	}
	return out, nil
}

func printReplicaDetails(w io.Writer, reps []admin.Replica, now time.Time) error {
	tw := table(w, "SOURCE", "TAG", "TIME", "AGE", "UUID", "SNAPSHOT")
	for _, r := range reps {
		for _, t := range r.Tags {
			row(tw, r.Source, t.Tag, t.Time.Format(time.RFC3339), short(time.Duration(t.AgeSeconds)*time.Second), t.UUID, t.Snapshot)
		}
		if len(r.Tags) == 0 {
			row(tw, r.Source, "", "", "", "", "")
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range reps {
		fmt.Fprintf(w, "\n%s: from %s; %s\n", r.Source, r.Repository, pullState(r, now))
		if r.Error != "" {
			fmt.Fprintf(w, "  last pull failed: %s\n", r.Error)
		}
	}
	return nil
}

// pullState says when a pull last worked, and with the registry failing
// how old the copy clones get is.
func pullState(r admin.Replica, now time.Time) string {
	s := "no pull since the plugin started"
	if r.Checked != nil {
		s = "pulled " + short(now.Sub(*r.Checked)) + " ago"
	}
	if r.Error == "" {
		return s
	}
	return s + "; the last pull FAILED: " + newestCopy(r)
}

// newestCopy says how old the newest version pulled here is: what clones
// get while the registry fails.
func newestCopy(r admin.Replica) string {
	if len(r.Tags) == 0 {
		return "nothing pulled here yet"
	}
	age := r.Tags[0].AgeSeconds
	for _, t := range r.Tags {
		age = min(age, t.AgeSeconds)
	}
	return "clones get the newest copy here, " + short(time.Duration(age)*time.Second) + " old"
}

// printReplicas is the REPLICAS section of snapvol ls and df: a line per
// tag pulled, in 100 columns (a longer line, a long repository, is cut;
// snapvol replica ls has every field).
func printReplicas(w io.Writer, reps []admin.Replica, now time.Time) error {
	if len(reps) == 0 {
		return nil
	}
	var buf bytes.Buffer
	fmt.Fprintln(&buf, "\nREPLICAS: pulled from a registry (every field: snapvol replica ls)")
	tw := table(&buf, "SOURCE", "TAG", "AGE", "PULLED", "STATE", "REPOSITORY")
	for _, r := range reps {
		pulled, state := "", "-"
		if r.Checked != nil {
			pulled, state = short(now.Sub(*r.Checked))+" ago", "ok"
		}
		if r.Error != "" {
			state = "failing"
		}
		for _, t := range r.Tags {
			row(tw, r.Source, t.Tag, short(time.Duration(t.AgeSeconds)*time.Second), pulled, state, r.Repository)
		}
		if len(r.Tags) == 0 {
			row(tw, r.Source, "", "", pulled, state, r.Repository)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range reps {
		if r.Error != "" {
			fmt.Fprintf(&buf, "%s: the last pull FAILED; %s\n  %s\n", r.Source, newestCopy(r), cutMiddle(r.Error, lsWidth-2))
		}
	}
	return writeFit(w, buf.String())
}

// cutMiddle shortens s to n columns by cutting its middle: a registry
// error names the repository first and the cause last.
func cutMiddle(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	head := (n - 5) / 2
	return string(r[:head]) + " ... " + string(r[len(r)-(n-5-head):])
}

// printPushFailures is snapvol ls's line per schedule whose last push
// failed (every field: snapvol snapshot schedule SOURCE).
func printPushFailures(w io.Writer, scs []admin.Schedule, now time.Time) error {
	var buf bytes.Buffer
	for _, sc := range scs {
		if sc.PushError == "" {
			continue
		}
		if buf.Len() == 0 {
			fmt.Fprintln(&buf, "\nSCHEDULED PUSHES FAILING (retried with the next snapshot; snapvol snapshot schedule SOURCE)")
		}
		fmt.Fprintf(&buf, "%s -> %s: failed %s ago: %s\n", sc.Source, sc.Push, short(now.Sub(sc.PushTried)), sc.PushError)
	}
	return writeFit(w, buf.String())
}

// lsWidth is what snapvol ls and df fit in.
const lsWidth = 100

// writeFit writes text with every line cut to lsWidth columns ("..."
// ending a cut line).
func writeFit(w io.Writer, text string) error {
	lines := strings.SplitAfter(text, "\n")
	for i, l := range lines {
		body := strings.TrimSuffix(l, "\n")
		if utf8.RuneCountInString(body) > lsWidth {
			r := []rune(body)
			lines[i] = string(r[:lsWidth-3]) + "..." + l[len(body):]
		}
	}
	_, err := io.WriteString(w, strings.Join(lines, ""))
	return err
}

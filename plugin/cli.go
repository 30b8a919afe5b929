package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/snapvol/snapvol/admin"
	"github.com/snapvol/snapvol/version"
)

// newCLI is the one snapvol binary: with no arguments (or serve) the
// plugin itself, the managed plugin's entrypoint; every other word is a
// command that talks to the running plugin over its admin socket. Help,
// version, a bad flag or a typo never start the daemon.
func newCLI(stdout, stderr io.Writer) *cobra.Command {
	stateDir := os.Getenv("STATE_DIR")
	if stateDir == "" {
		stateDir = defaults["STATE_DIR"]
	}
	client := func() *admin.Client { return admin.NewClient(admin.SocketPath(stateDir)) }
	var asJSON bool

	root := &cobra.Command{
		Use:   "snapvol",
		Short: "Docker volume plugin: writable copy-on-write clones of production volumes, by name",
		Long: `snapvol is a Docker volume plugin: a volume named SOURCE@REF (app-production@latest)
is a fresh writable clone of SOURCE. Run with no arguments (or "snapvol serve") it is
the plugin; the other commands talk to the running plugin over its admin socket in
STATE_DIR (--state-dir, or the STATE_DIR environment variable; default /var/lib/snapvol).`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          func(*cobra.Command, []string) error { return serve() },
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&stateDir, "state-dir", stateDir, "STATE_DIR of the running snapvol (where its admin socket is)")
	root.CompletionOptions.DisableDefaultCmd = true

	root.AddCommand(&cobra.Command{
		Use: "serve", Short: "Run the plugin (what snapvol with no arguments does)", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return serve() },
	})
	root.AddCommand(&cobra.Command{
		Use: "version", Short: "Print the version and commit of this binary", Args: cobra.NoArgs,
		Run: func(c *cobra.Command, _ []string) { fmt.Fprintln(c.OutOrStdout(), version.String()) },
	})

	ls := &cobra.Command{
		Use: "ls", Short: "List volumes: kind, source, ref, snapshot, age, mounts, expiry, bytes", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			vols, err := client().Volumes()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(c.OutOrStdout(), vols)
			}
			tw := table(c.OutOrStdout(), "NAME", "KIND", "SOURCE", "REF", "SNAPSHOT", "AGE", "MOUNTS", "STATE", "EXPIRES", "BYTES")
			for _, v := range vols {
				row(tw, v.Name, v.Kind, v.Source, v.Ref, v.Snapshot, v.AgeSeconds, v.Mounts, v.State, v.Expires, bytesOf(v.Bytes))
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	root.AddCommand(ls)

	df := &cobra.Command{
		Use: "df", Short: "Show the pool: size, used, free, reserve, largest consumers", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			u, err := client().Usage()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(c.OutOrStdout(), u)
			}
			tw := table(c.OutOrStdout(), "SIZE", "USED", "FREE", "RESERVE")
			row(tw, human(u.Size), human(u.Used), human(u.Free), human(u.Reserve))
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(u.Consumers) > 0 {
				fmt.Fprintln(c.OutOrStdout())
				tw = table(c.OutOrStdout(), "VOLUME", "KIND", "BYTES")
				for _, v := range u.Consumers {
					row(tw, v.Name, v.Kind, human(v.Bytes))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			if len(u.Pinned) > 0 {
				// Old data of a source that only snapshots and clones
				// still hold: billed to the source, freed by removing them.
				fmt.Fprintln(c.OutOrStdout())
				fmt.Fprintln(c.OutOrStdout(), "PINNED: old data of sources kept alive by snapshots and idle clones")
				tw = table(c.OutOrStdout(), "SOURCE", "SNAPSHOT", "EXCLUSIVE", "SHARED", "CLONES")
				for _, p := range u.Pinned {
					snap := p.Snapshot
					if snap == "" {
						snap = "(all)"
					}
					row(tw, p.Source, snap, human(p.Bytes), human(p.Shared), strings.Join(p.Clones, ","))
				}
				return tw.Flush()
			}
			return nil
		},
	}
	df.Flags().BoolVar(&asJSON, "json", false, "print a JSON object")
	root.AddCommand(df)

	root.AddCommand(metricsCommand(client))
	root.AddCommand(volumeCommand(client))
	root.AddCommand(snapshotCommand(client))
	root.AddCommand(recoverCommand())
	return root
}

func metricsCommand(client func() *admin.Client) *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "metrics [--listen HOST:PORT]",
		Short: "Print the running snapvol's Prometheus metrics, or serve them on the host over TCP",
		Long: `Reads /metrics from the admin socket in STATE_DIR and prints it (Prometheus text format).
With --listen it serves /metrics on HOST:PORT instead, answering each scrape from the admin
socket: a host Prometheus scrapes a managed plugin that has no network this way.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if listen == "" {
				return client().Metrics(c.OutOrStdout())
			}
			if err := checkHostPort(listen); err != nil {
				return fmt.Errorf("--listen %q: %w", listen, err)
			}
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			mux := http.NewServeMux()
			mux.Handle("GET /metrics", client().MetricsHandler())
			srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: time.Minute, IdleTimeout: 2 * time.Minute}
			fmt.Fprintf(c.OutOrStdout(), "serving http://%s/metrics from %s\n", l.Addr(), admin.SocketPath(stateDirOf(c)))
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			go func() { <-ctx.Done(); _ = srv.Close() }()
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "serve /metrics on HOST:PORT (e.g. 127.0.0.1:9478) instead of printing it")
	return cmd
}

// stateDirOf is the --state-dir the command runs with.
func stateDirOf(c *cobra.Command) string {
	v, _ := c.Flags().GetString("state-dir")
	return v
}

func volumeCommand(client func() *admin.Client) *cobra.Command {
	vol := &cobra.Command{Use: "volume", Short: "Operator volumes: create NAME --from SOURCE[@REF], rm NAME", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return c.Help() }}
	var from string
	var docker, secret bool
	create := &cobra.Command{
		Use:   "create NAME --from SOURCE[@REF] [--docker | --secret]",
		Short: "Make a clone NAME now, the operator's alone unless --docker or --secret says who else may mount it",
		Long: `Make a clone NAME of SOURCE@REF now. It is the operator's: Docker users cannot see, mount or
remove it, and only it can be snapshotted with snapvol snapshot create --from.

--docker   Docker users may mount and remove NAME like a volume they made with
           -o from=SOURCE -o ref=REF: SOURCES applies at every Mount.
--secret   for one container the operator starts (a masking job): the volume's name is NAME
           plus 128 random bits, printed alone on stdout; only that name mounts it, SOURCES
           does not apply, Docker cannot list or remove it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if from == "" {
				return errors.New("--from SOURCE[@REF] is required: what the volume clones")
			}
			access := ""
			switch {
			case docker && secret:
				return errors.New("--docker and --secret exclude each other: --docker shares the volume with Docker users under SOURCES, --secret hands it to one container")
			case docker:
				access = "docker"
			case secret:
				access = "secret"
			}
			v, err := client().CreateVolume(args[0], from, access)
			if err != nil {
				return err
			}
			if secret {
				// Alone on stdout, for name=$(snapvol volume create ... --secret).
				fmt.Fprintln(c.OutOrStdout(), v.Name)
				return nil
			}
			fmt.Fprintf(c.OutOrStdout(), "%s: clone of %s@%s (snapshot %s)\n", v.Name, v.Source, v.Ref, v.Snapshot)
			return nil
		},
	}
	create.Flags().StringVar(&from, "from", "", "SOURCE[@REF] to clone (REF: latest, now or a snapshot name; default latest)")
	create.Flags().BoolVar(&docker, "docker", false, "let Docker users mount and remove it, under SOURCES")
	create.Flags().BoolVar(&secret, "secret", false, "name it NAME-<random> (printed alone) for one container; SOURCES does not apply")
	vol.AddCommand(create, &cobra.Command{
		Use: "rm NAME", Short: "Remove a volume and its clone", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error { return client().RemoveVolume(args[0]) },
	})
	return vol
}

func snapshotCommand(client func() *admin.Client) *cobra.Command {
	snap := &cobra.Command{Use: "snapshot", Short: "Named and scheduled snapshots of a source", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return c.Help() }}
	var from string
	var replace, asJSON, off bool
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
	ls := &cobra.Command{
		Use: "ls SOURCE", Short: "List the snapshots of SOURCE: name, time, kind, clones using it", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			snaps, err := client().Snapshots(args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(c.OutOrStdout(), snaps)
			}
			tw := table(c.OutOrStdout(), "NAME", "TIME", "KIND", "FROM", "CLONES")
			for _, s := range snaps {
				row(tw, s.Name, s.Time.Format(time.RFC3339), s.Kind, s.From, strings.Join(s.Clones, ","))
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	rm := &cobra.Command{
		Use: "rm SOURCE NAME", Short: "Delete snapshot SOURCE@NAME (refused while clones use it)", Args: cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error { return client().RemoveSnapshot(args[0], args[1]) },
	}
	var every time.Duration
	var keep int
	schedule := &cobra.Command{
		Use:   "schedule SOURCE --every DURATION --keep N | --off",
		Short: "Snapshot SOURCE on a schedule, keeping the newest N scheduled snapshots",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if off {
				return client().ClearSchedule(args[0])
			}
			if every == 0 || keep == 0 {
				return errors.New("give --every DURATION and --keep N, or --off")
			}
			sc, err := client().SetSchedule(args[0], every, keep)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "%s: a snapshot every %s, the newest %d kept\n", sc.Source, sc.Every, sc.Keep)
			return nil
		},
	}
	schedule.Flags().DurationVar(&every, "every", 0, "how often (a Go duration: 1h, 30m, 1s)")
	schedule.Flags().IntVar(&keep, "keep", 0, "how many scheduled snapshots to keep")
	schedule.Flags().BoolVar(&off, "off", false, "turn the schedule off (its snapshots stay)")
	snap.AddCommand(create, ls, rm, schedule)
	return snap
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func table(w io.Writer, head ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	return tw
}

func row(tw *tabwriter.Writer, cols ...any) {
	s := make([]string, len(cols))
	for i, c := range cols {
		s[i] = fmt.Sprint(c)
		if s[i] == "" {
			s[i] = "-"
		}
	}
	fmt.Fprintln(tw, strings.Join(s, "\t"))
}

func bytesOf(b *int64) string {
	if b == nil {
		return "unknown"
	}
	return human(*b)
}

func human(n int64) string {
	if n < 0 {
		return "unknown"
	}
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

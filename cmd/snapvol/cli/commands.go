package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/snapvol/snapvol/admin"
)

func metricsCommand(client func() *admin.Client, stateDir *string) *cobra.Command {
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
			fmt.Fprintf(c.OutOrStdout(), "serving http://%s/metrics from %s\n", l.Addr(), admin.SocketPath(*stateDir))
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

// checkHostPort accepts HOST:PORT with a numeric port (HOST may be empty
// for every address, or an IPv6 address in brackets); the plugin checks
// METRICS_ADDR the same way.
func checkHostPort(v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("want HOST:PORT, e.g. 127.0.0.1:9478 (%v)", err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

func volumeCommand(client func() *admin.Client) *cobra.Command {
	vol := group("volume", "Operator volumes: create NAME --from SOURCE[@REF], rm NAME, inspect NAME")
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
		RunE: func(c *cobra.Command, args []string) error {
			if err := client().RemoveVolume(args[0]); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "%s: removed\n", args[0])
			return nil
		},
	}, inspectCommand(client))
	return vol
}

func table(w io.Writer, head ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	return tw
}

func row(tw *tabwriter.Writer, cols ...string) {
	for i, c := range cols {
		if c == "" {
			cols[i] = "-"
		}
	}
	fmt.Fprintln(tw, strings.Join(cols, "\t"))
}

func sizeOf(b *int64) string {
	if b == nil {
		return "-"
	}
	return human(*b)
}

// human is n bytes as df -h writes them (binary units: 999B, 1.5K, 12M,
// 3.0G); "-" where unknown (-1).
func human(n int64) string {
	if n < 0 {
		return "-"
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
	if f := float64(n) / float64(div); f < 10 {
		return fmt.Sprintf("%.1f%c", f, "KMGTPE"[exp])
	}
	return fmt.Sprintf("%d%c", n/div, "KMGTPE"[exp])
}

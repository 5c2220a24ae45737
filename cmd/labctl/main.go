// Command labctl creates and repairs homelab Kubernetes clusters from
// declarative profiles. This file only parses flags; each command is one
// function in package commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/labctl/labctl/commands"
	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/profiles"
)

// version is set at build time: -ldflags "-X main.version=v0.1.0".
var version = ""

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	interrupts(cancel, os.Stderr, os.Exit)
	os.Exit(run(ctx, os.Args, os.Stdout, os.Stderr, time.Now))
}

// interrupts stops the run at the first Ctrl-C (or SIGTERM): every step
// sees its context end and returns, SSH handshakes included. A second
// one exits at once.
func interrupts(cancel func(), stderr io.Writer, exit func(int)) {
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		fmt.Fprintln(stderr, "labctl: stopping (interrupt again to exit at once)")
		cancel()
		<-sig
		fmt.Fprintln(stderr, "labctl: exiting now")
		exit(130)
	}()
}

// run is main without the process: tests call it with their own writers
// and clock. It returns the exit code: 0 ok, 1 failed, 2 bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, now func() time.Time) int {
	app := newApp(stdout, stderr, now)
	args = hoistFlags(app, args)
	if name := unknownCommand(app, args); name != "" {
		fmt.Fprintf(stderr, "labctl: unknown command %q (labctl --help lists the commands)\n", name)
		return 2
	}
	err := app.RunContext(ctx, args)
	if err == nil {
		return 0
	}
	var usage usageError
	switch {
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "labctl: %v\n", err)
		return 2
	case errors.Is(err, plan.ErrCanceled), errors.Is(err, context.Canceled):
		fmt.Fprintln(stderr, "labctl: interrupted: no further step was started; running the command again continues where this run stopped")
		return 130
	case errors.Is(err, commands.ErrInvalid), errors.Is(err, commands.ErrNotReady), errors.Is(err, commands.ErrVerifyFailed):
		// The problems were printed on stdout with the verdicts or the table.
		fmt.Fprintf(stderr, "labctl: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "labctl: %v\n", err)
	return 1
}

type usageError struct{ error }

func newApp(stdout, stderr io.Writer, now func() time.Time) *cli.App {
	textOrJSON := outputFlag(commands.OutputText, commands.OutputJSON)
	insecureFlag := &cli.BoolFlag{Name: "proxmox-insecure", Usage: "do not verify the Proxmox API's TLS certificate (prefer proxmox.caFile or proxmox.fingerprint)"}
	fileFlag := &cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "read the profile from `FILE` instead of by name"}
	stateDirFlag := &cli.StringFlag{Name: "state-dir", Usage: "labctl's local state under `DIR` (default ~/.local/state/labctl)"}
	env := func(c *cli.Context) commands.Env {
		return commands.Env{
			Stdout: stdout, Stderr: stderr, Now: now,
			Output: c.String("output"),
			Loader: profiles.Loader{Dir: c.String("profiles-dir")},
		}
	}
	// oneProfile reads "NAME" or "-f FILE".
	oneProfile := func(c *cli.Context) (commands.ProfileArg, error) {
		a := commands.ProfileArg{File: c.String("file")}
		switch c.NArg() {
		case 0:
		case 1:
			a.Name = c.Args().First()
			if a.File != "" {
				return a, usageError{fmt.Errorf("%s: give a profile name or -f FILE, not both", c.Command.Name)}
			}
		default:
			return a, usageError{fmt.Errorf("%s takes one profile, got %d arguments", c.Command.Name, c.NArg())}
		}
		if a.Name == "" && a.File == "" {
			return a, usageError{fmt.Errorf("%s: which profile? give a name (labctl profiles list) or -f FILE", c.Command.Name)}
		}
		return a, nil
	}

	app := &cli.App{
		Name:                 "labctl",
		Usage:                "create and repair homelab Kubernetes clusters from declarative profiles",
		Version:              buildVersion(),
		Writer:               stdout,
		ErrWriter:            stderr,
		EnableBashCompletion: true,
		HideVersion:          true,
		ExitErrHandler:       func(*cli.Context, error) {}, // run decides exit codes
		Flags: []cli.Flag{
			&cli.StringFlag{
				Name: "profiles-dir", Value: commands.DefaultProfilesDir(), EnvVars: []string{"LABCTL_PROFILES_DIR"},
				Usage: "directory of user profiles (`DIR`/NAME.yaml); they shadow embedded ones of the same name",
			},
		},
		Commands: []*cli.Command{
			{
				Name:  "profiles",
				Usage: "list, show and validate profiles",
				Subcommands: []*cli.Command{
					{
						Name: "list", Usage: "list embedded and user profiles",
						Flags:  []cli.Flag{textOrJSON},
						Action: func(c *cli.Context) error { return commands.ProfilesList(env(c)) },
					},
					{
						Name: "show", Usage: "print the effective profile (extends resolved, defaults filled in)",
						ArgsUsage: "NAME | -f FILE",
						Flags:     []cli.Flag{fileFlag, outputFlag(commands.OutputYAML, commands.OutputJSON, commands.OutputText)},
						Action: func(c *cli.Context) error {
							a, err := oneProfile(c)
							if err != nil {
								return err
							}
							return commands.ProfilesShow(env(c), a)
						},
					},
					{
						Name: "schema", Usage: "print the JSON Schema of profile files, for editors",
						Action: func(c *cli.Context) error { return commands.ProfilesSchema(env(c)) },
					},
					{
						Name: "validate", Usage: "check profiles; every problem names the file, line and field",
						ArgsUsage: "[NAME ...] [-f FILE ...]",
						Flags:     []cli.Flag{&cli.StringSliceFlag{Name: "file", Aliases: []string{"f"}, Usage: "validate `FILE` (repeatable)"}, textOrJSON},
						Action: func(c *cli.Context) error {
							var args []commands.ProfileArg
							for _, n := range c.Args().Slice() {
								args = append(args, commands.ProfileArg{Name: n})
							}
							for _, f := range c.StringSlice("file") {
								args = append(args, commands.ProfileArg{File: f})
							}
							return commands.ProfilesValidate(env(c), args)
						},
					},
				},
			},
			{
				Name:      "plan",
				Usage:     "show the ordered create flow for a profile and what each step would change",
				ArgsUsage: "NAME | -f FILE",
				Flags: []cli.Flag{fileFlag, textOrJSON, insecureFlag,
					&cli.BoolFlag{Name: "observe", Usage: "read what exists (Proxmox VE, the hosts and K3s over SSH, a k3d cluster; read-only) and plan from it, showing drift"},
					&cli.StringFlag{Name: "kubeconfig", Usage: "with --observe, compare the context in `FILE` (default $KUBECONFIG or ~/.kube/config)"},
					&cli.StringFlag{Name: "state-dir", Usage: "with --observe, compare the nodes' token with the one under `DIR` (default ~/.local/state/labctl)"},
					&cli.StringFlag{Name: "rebuild", Usage: "plan the rebuild of `NODE` instead (without --observe: it dead, the others healthy)"},
					&cli.BoolFlag{Name: "upgrade", Usage: "plan the upgrade to the profile's K3s version and config.yaml instead"}},
				Action: func(c *cli.Context) error {
					a, err := oneProfile(c)
					if err != nil {
						return err
					}
					return commands.Plan(c.Context, env(c), a, commands.PlanOptions{Observe: c.Bool("observe"), Rebuild: c.String("rebuild"), Upgrade: c.Bool("upgrade"), Kubeconfig: c.String("kubeconfig"), StateDir: c.String("state-dir"), Proxmox: commands.ProxmoxOptions{Insecure: c.Bool("proxmox-insecure")}})
				},
			},
			{
				Name:      "create",
				Usage:     "create the cluster: a k3d cluster, or K3s on Proxmox VMs or given hosts (VMs, prerequisites, K3s, kubeconfig), then Flux; re-running converges",
				ArgsUsage: "NAME | -f FILE",
				Flags: []cli.Flag{fileFlag, textOrJSON,
					&cli.BoolFlag{Name: "no-flux", Usage: "create the cluster without bootstrapping Flux"},
					&cli.BoolFlag{Name: "force", Usage: "let Flux's bootstrap replace a flux-system that syncs another path"},
					&cli.BoolFlag{Name: "accept-new-host-keys", Usage: "record the keys of hosts missing from known_hosts (a changed key is always refused)"},
					&cli.StringFlag{Name: "kubeconfig", Usage: "merge the context into `FILE` (default $KUBECONFIG or ~/.kube/config)"},
					&cli.StringFlag{Name: "state-dir", Usage: "keep the cluster token under `DIR` (default ~/.local/state/labctl)"},
					&cli.IntFlag{Name: "parallel", Value: 8, Usage: "run at most `N` steps at once"},
					insecureFlag,
					&cli.BoolFlag{Name: "apply-drift", Usage: "change existing VMs whose config differs from the profile (see 'labctl plan --observe')"}},
				Action: func(c *cli.Context) error {
					a, err := oneProfile(c)
					if err != nil {
						return err
					}
					return commands.Create(c.Context, env(c), a, commands.CreateOptions{
						NoFlux: c.Bool("no-flux"), Force: c.Bool("force"), AcceptNewHostKeys: c.Bool("accept-new-host-keys"),
						Kubeconfig: c.String("kubeconfig"), StateDir: c.String("state-dir"), Parallel: c.Int("parallel"),
						Proxmox: commands.ProxmoxOptions{Insecure: c.Bool("proxmox-insecure"), ApplyDrift: c.Bool("apply-drift")},
					})
				},
			},
			{
				Name:      "destroy",
				Usage:     "delete the profile's k3d cluster (containers, network, volumes) or Proxmox VMs (purged), or uninstall K3s from given hosts; then its kubeconfig context",
				ArgsUsage: "NAME | -f FILE",
				Flags: []cli.Flag{fileFlag, textOrJSON, insecureFlag,
					&cli.BoolFlag{Name: "yes", Usage: "do not ask for confirmation"},
					&cli.BoolFlag{Name: "dry-run", Usage: "print the plan from what exists and change nothing"},
					&cli.StringFlag{Name: "kubeconfig", Usage: "remove the context from `FILE` (default $KUBECONFIG or ~/.kube/config)"}},
				Action: func(c *cli.Context) error {
					a, err := oneProfile(c)
					if err != nil {
						return err
					}
					return commands.Destroy(c.Context, env(c), a, commands.DestroyOptions{Yes: c.Bool("yes"), DryRun: c.Bool("dry-run"), Confirm: c.App.Reader, Kubeconfig: c.String("kubeconfig"), Proxmox: commands.ProxmoxOptions{Insecure: c.Bool("proxmox-insecure")}})
				},
			},
			{
				Name:      "rebuild",
				Usage:     "replace a failed node: quorum checked, etcd snapshot first, its Node and member removed, machine recreated, rejoined through a healthy server",
				ArgsUsage: "NAME NODE | -f FILE NODE",
				Flags: []cli.Flag{fileFlag, textOrJSON, insecureFlag,
					&cli.BoolFlag{Name: "yes", Usage: "rebuild a node that is still healthy without asking (it is drained first)"},
					&cli.BoolFlag{Name: "dry-run", Usage: "print the plan from what exists and change nothing"},
					&cli.BoolFlag{Name: "replace-host-key", Usage: "the node's machine was reinstalled: its new SSH host key replaces the known_hosts line"},
					&cli.StringFlag{Name: "kubeconfig", Usage: "merge the context into `FILE` (default $KUBECONFIG or ~/.kube/config)"},
					&cli.StringFlag{Name: "state-dir", Usage: "cluster token, snapshots and the rebuild journal under `DIR` (default ~/.local/state/labctl)"},
					&cli.DurationFlag{Name: "drain-timeout", Value: 5 * time.Minute, Usage: "give up the drain of a healthy node after `D`"}},
				Action: func(c *cli.Context) error {
					a := commands.ProfileArg{File: c.String("file")}
					args := c.Args().Slice()
					want := 2
					if a.File != "" {
						want = 1
					}
					if len(args) != want {
						return usageError{fmt.Errorf("rebuild takes a profile and a node (NAME NODE, or -f FILE NODE), got %d arguments", len(args))}
					}
					if a.File == "" {
						a.Name, args = args[0], args[1:]
					}
					return commands.Rebuild(c.Context, env(c), a, commands.RebuildOptions{
						Node: args[0], Yes: c.Bool("yes"), DryRun: c.Bool("dry-run"), Confirm: c.App.Reader, ReplaceHostKey: c.Bool("replace-host-key"),
						Kubeconfig: c.String("kubeconfig"), StateDir: c.String("state-dir"), Proxmox: commands.ProxmoxOptions{Insecure: c.Bool("proxmox-insecure")},
						DrainTimeout: c.Duration("drain-timeout"),
					})
				},
			},
			{
				Name:      "upgrade",
				Usage:     "roll the profile's K3s version and config.yaml out: servers one at a time, then agents; etcd snapshot first",
				ArgsUsage: "NAME | -f FILE",
				Flags: []cli.Flag{fileFlag, textOrJSON,
					&cli.BoolFlag{Name: "yes", Usage: "do not ask for confirmation"},
					&cli.BoolFlag{Name: "dry-run", Usage: "print the plan from what exists and change nothing"},
					&cli.StringFlag{Name: "state-dir", Usage: "cluster token and snapshots under `DIR` (default ~/.local/state/labctl)"},
					&cli.IntFlag{Name: "parallel", Value: 8, Usage: "upgrade at most `N` agents at once"},
					&cli.DurationFlag{Name: "drain-timeout", Value: 5 * time.Minute, Usage: "give up a drain (PodDisruptionBudgets can hold one) after `D`"}},
				Action: func(c *cli.Context) error {
					a, err := oneProfile(c)
					if err != nil {
						return err
					}
					return commands.Upgrade(c.Context, env(c), a, commands.UpgradeOptions{Yes: c.Bool("yes"), DryRun: c.Bool("dry-run"), Confirm: c.App.Reader, StateDir: c.String("state-dir"), Parallel: c.Int("parallel"), DrainTimeout: c.Duration("drain-timeout")})
				},
			},
			{
				Name:  "snapshot",
				Usage: "etcd snapshots of an SSH-nodes profile: saved on a server and copied into local state",
				Subcommands: []*cli.Command{
					{
						Name: "save", Usage: "save an etcd snapshot on a server and copy it into local state (0600)", ArgsUsage: "NAME | -f FILE",
						Flags: []cli.Flag{fileFlag, textOrJSON, stateDirFlag, &cli.StringFlag{Name: "reason", Usage: "note `WHY` with the snapshot"}},
						Action: func(c *cli.Context) error {
							a, err := oneProfile(c)
							if err != nil {
								return err
							}
							return commands.SnapshotSave(c.Context, env(c), a, commands.SnapshotOptions{StateDir: c.String("state-dir"), Reason: c.String("reason")})
						},
					},
					{
						Name: "list", Usage: "list the snapshots kept locally and on the servers", ArgsUsage: "NAME | -f FILE",
						Flags: []cli.Flag{fileFlag, textOrJSON, stateDirFlag},
						Action: func(c *cli.Context) error {
							a, err := oneProfile(c)
							if err != nil {
								return err
							}
							return commands.SnapshotList(c.Context, env(c), a, commands.SnapshotOptions{StateDir: c.String("state-dir")})
						},
					},
					{
						Name: "prune", Usage: "keep the newest snapshots labctl took, locally and per server; delete the older ones", ArgsUsage: "NAME | -f FILE",
						Flags: []cli.Flag{fileFlag, textOrJSON, stateDirFlag, &cli.IntFlag{Name: "keep", Value: 5, Usage: "keep `N` snapshots"}, &cli.BoolFlag{Name: "dry-run", Usage: "print what would be deleted"}},
						Action: func(c *cli.Context) error {
							a, err := oneProfile(c)
							if err != nil {
								return err
							}
							return commands.SnapshotPrune(c.Context, env(c), a, commands.SnapshotOptions{StateDir: c.String("state-dir"), Keep: c.Int("keep"), DryRun: c.Bool("dry-run")})
						},
					},
				},
			},
			{
				Name:      "restore",
				Usage:     "restore etcd from a snapshot: K3s stopped on every server, the snapshot restored on one, the others rejoined",
				ArgsUsage: "NAME | -f FILE",
				Flags: []cli.Flag{fileFlag, textOrJSON, stateDirFlag,
					&cli.StringFlag{Name: "snapshot", Usage: "the snapshot: a local `FILE`, or a name in local state or on a server (labctl snapshot list)"},
					&cli.BoolFlag{Name: "yes", Usage: "do not ask for confirmation"},
					&cli.BoolFlag{Name: "dry-run", Usage: "print the plan from what exists and change nothing"},
					&cli.StringFlag{Name: "kubeconfig", Usage: "merge the context into `FILE` (default $KUBECONFIG or ~/.kube/config)"}},
				Action: func(c *cli.Context) error {
					a, err := oneProfile(c)
					if err != nil {
						return err
					}
					return commands.Restore(c.Context, env(c), a, commands.RestoreOptions{Snapshot: c.String("snapshot"), Yes: c.Bool("yes"), DryRun: c.Bool("dry-run"), Confirm: c.App.Reader, Kubeconfig: c.String("kubeconfig"), StateDir: c.String("state-dir")})
				},
			},
			{
				Name:      "verify",
				Usage:     "check, read-only, the live cluster against its profile: machines, hosts, K3s, etcd, Nodes, storage, ingress, Flux, secrets, DNS (exit 1 when a check fails)",
				ArgsUsage: "NAME | -f FILE",
				Flags: []cli.Flag{fileFlag, textOrJSON, stateDirFlag, insecureFlag,
					&cli.StringFlag{Name: "dns-server", Usage: "ask `ADDR` (host[:port]) for the DNS records instead of the system resolver"},
					&cli.StringFlag{Name: "kubeconfig", Usage: "a k3d cluster's context in `FILE` (default $KUBECONFIG or ~/.kube/config)"}},
				Action: func(c *cli.Context) error {
					a, err := oneProfile(c)
					if err != nil {
						return err
					}
					return commands.Verify(c.Context, env(c), a, commands.VerifyOptions{DNSServer: c.String("dns-server"), Kubeconfig: c.String("kubeconfig"), StateDir: c.String("state-dir"), Proxmox: commands.ProxmoxOptions{Insecure: c.Bool("proxmox-insecure")}})
				},
			},
			{
				Name:      "preflight",
				Usage:     "check, read-only, that every node has what K3s and Longhorn need (before a cluster exists)",
				ArgsUsage: "NAME | -f FILE",
				Flags: []cli.Flag{fileFlag, textOrJSON,
					&cli.BoolFlag{Name: "accept-new-host-keys", Usage: "record the keys of hosts missing from known_hosts (a changed key is always refused)"}},
				Action: func(c *cli.Context) error {
					a, err := oneProfile(c)
					if err != nil {
						return err
					}
					return commands.Preflight(c.Context, env(c), a, commands.PreflightOptions{AcceptNewHostKeys: c.Bool("accept-new-host-keys")})
				},
			},
			{
				Name:      "kubeconfig",
				Usage:     "merge the cluster's kubeconfig as context NAME, leaving other contexts alone",
				ArgsUsage: "NAME | -f FILE",
				Flags: []cli.Flag{fileFlag,
					&cli.StringFlag{Name: "kubeconfig", Usage: "merge into `FILE` (default $KUBECONFIG or ~/.kube/config)"},
					&cli.BoolFlag{Name: "switch-context", Usage: "make it the current context"},
					&cli.BoolFlag{Name: "accept-new-host-keys", Usage: "record the keys of hosts missing from known_hosts"}},
				Action: func(c *cli.Context) error {
					a, err := oneProfile(c)
					if err != nil {
						return err
					}
					return commands.Kubeconfig(c.Context, env(c), a, commands.KubeconfigOptions{
						Path: c.String("kubeconfig"), SwitchContext: c.Bool("switch-context"), AcceptNewHostKeys: c.Bool("accept-new-host-keys"),
					})
				},
			},
			{
				Name:  "version",
				Usage: "print labctl's version",
				Action: func(c *cli.Context) error {
					_, err := fmt.Fprintf(stdout, "labctl %s\n", buildVersion())
					return err
				},
			},
			{
				Name:      "completion",
				Usage:     "print a shell completion script (bash, zsh or fish)",
				ArgsUsage: "bash|zsh|fish",
				Action: func(c *cli.Context) error {
					shell := c.Args().First()
					script, err := completionScript(c.App, shell)
					if err != nil {
						return usageError{err}
					}
					_, err = io.WriteString(stdout, script)
					return err
				},
			},
		},
	}
	usageErrors(app.Commands)
	app.OnUsageError = func(_ *cli.Context, err error, _ bool) error { return usageError{err} }
	return app
}

// usageErrors makes every command's flag errors (an unknown flag, a flag
// without its value) usage errors: exit status 2, as the README says.
func usageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = func(_ *cli.Context, err error, _ bool) error { return usageError{err} }
		usageErrors(c.Subcommands)
	}
}

// outputFlag is -o/--output taking one of allowed (the first is the
// default); another value is a usage error, not silently ignored.
func outputFlag(allowed ...string) *cli.StringFlag {
	return &cli.StringFlag{
		Name: "output", Aliases: []string{"o"}, Value: allowed[0], Usage: strings.Join(allowed, " or "),
		Action: func(_ *cli.Context, v string) error {
			if !slices.Contains(allowed, v) {
				return usageError{fmt.Errorf("--output %q: this command writes %s", v, strings.Join(allowed, " or "))}
			}
			return nil
		},
	}
}

// unknownCommand is the first word of args that should name a command
// but does not ("" when all is well).
func unknownCommand(app *cli.App, args []string) string {
	cmds, flags := app.Commands, app.Flags
	for i := 1; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			if takesValue(flags, a) {
				i++
			}
			continue
		}
		c := findCommand(cmds, a)
		if c == nil {
			if len(cmds) > 0 && a != "help" && a != "h" {
				return a
			}
			return ""
		}
		if len(c.Subcommands) == 0 {
			return ""
		}
		cmds, flags = c.Subcommands, c.Flags
	}
	return ""
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

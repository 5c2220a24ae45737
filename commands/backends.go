package commands

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"sort"
	"strings"
	"time"

	"github.com/labctl/labctl/bootstrap"
	"github.com/labctl/labctl/flow"
	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/k3d"
	"github.com/labctl/labctl/provision/k3s"
	"github.com/labctl/labctl/provision/kubeconfig"
	"github.com/labctl/labctl/provision/nodes"
	"github.com/labctl/labctl/provision/offline"
	"github.com/labctl/labctl/provision/proxmox"
	"github.com/labctl/labctl/provision/remote"
	"github.com/labctl/labctl/provision/state"
)

// wiring says which providers a command needs and how they behave.
type wiring struct {
	// Offline gives providers that contact nothing and answer as fresh
	// machines (labctl plan without --observe).
	Offline bool
	// Flux adds the Flux provider; OfflineFlux keeps it offline in an
	// observed plan.
	Flux, OfflineFlux bool
	// Force lets Flux's bootstrap replace a flux-system on another path.
	Force             bool
	AcceptNewHostKeys bool
	// ReplaceHostKeys names nodes whose reinstalled machines' new host
	// keys replace their known_hosts lines.
	ReplaceHostKeys []string
	// Down is the node a rebuild plan assumes dead (offline); Upgrade
	// plans an upgrade offline (the nodes' version then unknown).
	Down    string
	Upgrade bool
	// DrainTimeout bounds a drain (default 5 minutes).
	DrainTimeout time.Duration
	// HostsOnly leaves the VMs' provider out: the command works on the
	// machines over SSH only (preflight, kubeconfig).
	HostsOnly bool
	// Kubeconfig is the file the context is merged into (default
	// $KUBECONFIG or ~/.kube/config); StateDir keeps the cluster token
	// and generated keys (default k3s.StateDir()).
	Kubeconfig, StateDir string
	Proxmox              ProxmoxOptions
}

// wired is a profile's providers with what the command reports of them.
type wired struct {
	flow.Backends
	Kubeconfig string
	pool       *remote.Pool
	vms        *proxmox.Backend
	hosts      *nodes.Backend // the SSH nodes, or a k3d cluster's tuned Docker host
	k3s        *nodes.K3s
	k3d        *k3d.Backend
	state      state.Dir
}

// Close ends the SSH connections.
func (w *wired) Close() {
	if w.pool != nil {
		w.pool.Close()
	}
}

// backends is the one place that turns a profile into its providers, for
// every command.
func (e Env) backends(l *profiles.Loaded, o wiring) (*wired, error) {
	s := &l.Spec
	if o.Kubeconfig == "" && !o.Offline {
		var err error
		if o.Kubeconfig, err = kubeconfig.DefaultPath(); err != nil {
			return nil, err
		}
	}
	w := &wired{Kubeconfig: o.Kubeconfig}
	stateDir := o.StateDir
	if stateDir == "" {
		var err error
		if stateDir, err = k3s.StateDir(); err != nil {
			if !o.Offline {
				return nil, err
			}
			stateDir = "~/.local/state/labctl" // only shown
		}
	}
	journal := state.Dir{Root: stateDir, Profile: l.Metadata.Name}
	w.state = journal
	if o.Offline {
		switch {
		case s.K3d != nil:
			w.K3d, w.Local = offline.K3d{Spec: s.K3d, Down: o.Down}, offline.Healthy{StateDir: journal.Path()}
			if s.Hosts != nil {
				w.Hosts = offline.Hosts{Spec: s}
			}
		case o.Down != "" || o.Upgrade:
			h := offline.Healthy{Spec: s, Down: o.Down, StateDir: journal.Path(), Unobserved: o.Upgrade}
			if s.Proxmox != nil {
				w.VMs = h
			}
			w.Hosts, w.K3s, w.Ops, w.Local = offline.Hosts{Spec: s}, h, h, h
		default:
			if s.Proxmox != nil {
				w.VMs = offline.VMs{}
			}
			w.Hosts, w.K3s = offline.Hosts{Spec: s}, offline.K3s{}
		}
		if o.Flux {
			w.Flux = offline.Flux{}
		}
		return w, nil
	}
	if s.K3d != nil {
		w.k3d = &k3d.Backend{Spec: s, Profile: l.Metadata.Name, Kubeconfig: o.Kubeconfig}
		w.K3d, w.Local = w.k3d, journal
		if _, ssh, ok := s.DockerHostMachine(); ok && s.Hosts != nil {
			if ssh.User == "" { // as Docker's ssh would: this machine's user
				u, err := user.Current()
				if err != nil {
					return nil, fmt.Errorf("spec.k3d.dockerHost %s names no user, and this machine's is unknown: %w", s.K3d.DockerHost, err)
				}
				ssh.User = u.Username
			}
			// The Docker host is tuned over SSH like a node: labctl's
			// own client, the same known_hosts, sudo when not root.
			w.pool = remote.NewPool(nil)
			w.hosts = &nodes.Backend{Pool: w.pool, SSH: &ssh, AcceptNewHostKeys: o.AcceptNewHostKeys, Spec: s}
			w.Hosts = w.hosts
		}
	} else {
		if s.Proxmox != nil && !o.HostsOnly {
			vms, err := proxmoxBackend(l, o.Proxmox, e.Stderr)
			if err != nil {
				return nil, err
			}
			vms.Replaced = o.ReplaceHostKeys
			w.vms, w.VMs = vms, vms
		}
		w.pool = remote.NewPool(nil)
		hosts := &nodes.Backend{Pool: w.pool, SSH: s.SSH, AcceptNewHostKeys: o.AcceptNewHostKeys, ReplaceHostKeys: o.ReplaceHostKeys, Spec: s}
		w.hosts = hosts
		tok := &nodes.Token{Dir: stateDir, Profile: l.Metadata.Name, Ref: s.K3s.TokenRef, Lookup: os.LookupEnv, Redact: w.pool.Redact,
			Created: func() { fmt.Fprintf(e.Stderr, "generated a cluster token for %s in %s\n", l.Metadata.Name, stateDir) }}
		w.k3s = &nodes.K3s{Hosts: hosts, Spec: s, Profile: l.Metadata.Name, Token: tok, Kubeconfig: o.Kubeconfig, DrainTimeout: o.DrainTimeout}
		w.Hosts, w.K3s, w.Ops, w.Local = hosts, w.k3s, w.k3s, journal
	}
	switch {
	case o.Flux && o.OfflineFlux:
		w.Flux = offline.Flux{}
	case o.Flux:
		w.Flux = &bootstrap.Backend{Spec: s, Kubeconfig: o.Kubeconfig, Context: l.Metadata.Name, Lookup: os.LookupEnv, Force: o.Force, Log: e.Stderr, KeyDir: stateDir}
	}
	return w, nil
}

// sink is the event sink of the command's output format.
func (e Env) sink() plan.Sink {
	var out plan.Sink
	if e.Output == OutputJSON {
		out = plan.NewJSONLines(e.Stdout)
	} else {
		p := plan.NewProgress(e.Stdout)
		p.Live = isTerminal(e.Stdout)
		out = p
	}
	if e.Events != nil {
		return plan.Sinks{out, e.Events}
	}
	return out
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// connections renders the SSH connections and commands per host of a run.
func (w *wired) connections() string {
	if w.pool == nil {
		return ""
	}
	conns, cmds := w.pool.Connections(), w.pool.Commands()
	keys := make([]string, 0, len(conns))
	for k := range conns {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s %d/%d", k, conns[k], cmds[k])
	}
	return b.String()
}

// dryRun runs p as a dry run (every check, no change), keeping going past
// failures so every finding shows, and prints it as a plan or as events.
func (e Env) dryRun(ctx context.Context, p *plan.Plan, footer string) error {
	rec := &plan.Recorder{}
	_, runErr := plan.Run(ctx, p, plan.Options{DryRun: true, KeepGoing: true, Sink: rec, Now: e.Now})
	events := plan.Ordered(rec.Events())
	switch e.Output {
	case OutputJSON:
		sink := plan.NewJSONLines(e.Stdout)
		for _, ev := range events {
			sink.Event(ev)
		}
	case OutputText, "":
		if err := plan.WritePlan(e.Stdout, events); err != nil {
			return err
		}
		if footer != "" {
			fmt.Fprintln(e.Stdout, footer)
		}
	default:
		return fmt.Errorf("output %q: want text or json", e.Output)
	}
	return runErr
}

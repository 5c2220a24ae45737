package commands

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/labctl/labctl/flow"
	"github.com/labctl/labctl/plan"
)

// DestroyOptions shape `labctl destroy`.
type DestroyOptions struct {
	// Yes skips the confirmation; without it the confirmation word (the
	// k3d cluster's name, else the profile's) must be typed on Confirm.
	Yes     bool
	Confirm io.Reader
	// DryRun prints the plan and changes nothing.
	DryRun bool
	// Kubeconfig is the file whose context is removed.
	Kubeconfig string
	// Proxmox shapes the VM provider of a profile with spec.proxmox.
	Proxmox ProxmoxOptions
}

// ErrNotConfirmed is returned when destroy was not confirmed.
var ErrNotConfirmed = errors.New("not confirmed")

// Destroy shows the destroy plan and, once confirmed, runs it: a k3d
// cluster deleted with its volumes; Proxmox VMs (labctl's only) stopped
// and purged and their host keys forgotten; on hosts that were given, K3s
// uninstalled with its own scripts, the host prerequisites left in
// place; then the kubeconfig context removed.
func Destroy(ctx context.Context, e Env, a ProfileArg, o DestroyOptions) error {
	l, err := e.Load(a)
	if err != nil {
		return err
	}
	s := &l.Spec
	word, what := l.Metadata.Name, ""
	switch {
	case s.K3d != nil:
		word = s.K3d.ClusterName
		what = fmt.Sprintf("This deletes k3d cluster %q with its volumes, and its kubeconfig context.", word)
	case s.Proxmox != nil:
		var names []string
		for _, n := range s.Nodes {
			names = append(names, fmt.Sprintf("%s (%s)", n.Name, n.Address))
		}
		what = fmt.Sprintf("This stops and purges, with their disks, the VMs %s on Proxmox node %s, forgets their host keys and removes the kubeconfig context.", strings.Join(names, ", "), s.Proxmox.Node)
	default:
		what = fmt.Sprintf("This uninstalls K3s from %s, deleting the cluster's data on them, and removes the kubeconfig context.", plural(len(s.Nodes), "host"))
	}
	w, err := e.backends(l, wiring{Kubeconfig: o.Kubeconfig, Proxmox: o.Proxmox})
	if err != nil {
		return err
	}
	defer w.Close()
	p, err := flow.Destroy(&l.Profile, w.Backends, flow.Options{Kubeconfig: w.Kubeconfig})
	if err != nil {
		return err
	}
	// The plan first, from what exists now: what the confirmation is for.
	if err := e.dryRun(ctx, p, ""); err != nil || o.DryRun {
		return err
	}
	if !o.Yes {
		if err := confirm(e, o, word, what); err != nil {
			return fmt.Errorf("destroy %s: %w", l.Metadata.Name, err)
		}
	}
	// A new plan (and facts model) for the real run, which observes
	// again. Every VM or host is attempted; a failure blocks only the
	// context's removal.
	if p, err = flow.Destroy(&l.Profile, w.Backends, flow.Options{Kubeconfig: w.Kubeconfig}); err != nil {
		return err
	}
	_, err = plan.Run(ctx, p, plan.Options{Sink: e.sink(), KeepGoing: true, Now: e.Now})
	return err
}

// confirm asks for word to be typed on o.Confirm.
func confirm(e Env, o DestroyOptions, word, what string) error {
	fmt.Fprintf(e.Stderr, "%s\nType %q to confirm: ", what, word)
	line := ""
	if o.Confirm != nil {
		line, _ = bufio.NewReader(o.Confirm).ReadString('\n')
	}
	if strings.TrimSpace(line) != word {
		return fmt.Errorf("%w (type %q, or pass --yes)", ErrNotConfirmed, word)
	}
	return nil
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

package flow

import (
	"context"
	"fmt"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/k3s"
)

// Destroy builds the destroy plan: a k3d cluster deleted with its
// volumes; Proxmox VMs (labctl's only) stopped and purged and their host
// keys forgotten; on hosts that were given, K3s uninstalled with its own
// scripts and the host prerequisites left in place. The kubeconfig
// context goes last.
func Destroy(p *profiles.Profile, b Backends, o Options) (*plan.Plan, error) {
	f := newBuilder(p, b, o, "destroy "+p.Metadata.Name)
	s := f.s
	switch {
	case s.K3d != nil:
		if err := f.need(false, false, false, true, false); err != nil {
			return nil, err
		}
		f.removeContext([]string{f.deleteK3d()}, b.K3d)
	case s.Proxmox != nil:
		if err := f.need(true, true, true, false, false); err != nil {
			return nil, err
		}
		var vms []string
		for _, n := range s.Nodes {
			vms = append(vms, f.destroyVM(n))
		}
		f.removeContext([]string{f.forgetHostKeys(vms)}, b.K3s)
	default:
		if err := f.need(false, true, true, false, false); err != nil {
			return nil, err
		}
		var done []string
		for _, n := range s.Nodes {
			done = append(done, f.uninstallK3s(n))
		}
		f.removeContext(done, b.K3s)
	}
	return f.plan, nil
}

func (f *builder) deleteK3d() string {
	k := f.s.K3d
	f.plan.Add(plan.Step{
		ID: "k3d-delete", Title: "Delete k3d cluster", Host: dockerHostLabel(k),
		Check: func(ctx context.Context, _ func(string)) (plan.Verdict, error) {
			c, err := f.b.K3d.Observe(ctx)
			switch {
			case c.Exists:
				// One of another shape goes too: it bears the profile's name.
				return plan.ToDo("k3d cluster %q exists on %s", k.ClusterName, dockerName(k)), nil
			case err != nil:
				return plan.Verdict{}, err
			}
			return plan.InPlace("no k3d cluster %q on %s", k.ClusterName, dockerName(k)), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			return x.Wet(fmt.Sprintf("delete k3d cluster %q on %s with its network and volumes", k.ClusterName, dockerName(k)), f.b.K3d.Delete)
		},
	})
	return "k3d-delete"
}

func (f *builder) destroyVM(n profiles.Node) string {
	id := "vm-destroy/" + n.Name
	f.plan.Add(plan.Step{
		ID: id, Title: "Destroy VM", Host: n.Name,
		Check: func(ctx context.Context, _ func(string)) (plan.Verdict, error) {
			vm, err := f.b.VMs.ObserveVM(ctx, n)
			switch {
			case err != nil:
				return plan.Verdict{}, err
			case !vm.Exists:
				return plan.InPlace("no VM %q", n.Name), nil
			case !vm.Managed:
				return plan.Verdict{}, fmt.Errorf("node %s: VM %d %q was not created by labctl for profile %s: not destroying it", n.Name, vm.VMID, n.Name, f.p.Metadata.Name)
			}
			return plan.ToDo("%s", vm.Reason()), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			return x.Wet(fmt.Sprintf("stop and purge VM %s with its disks", vmRef(n)), func(ctx context.Context) error {
				_, err := f.b.VMs.DestroyVM(ctx, n)
				return err
			})
		},
	})
	return id
}

func (f *builder) forgetHostKeys(after []string) string {
	file := "known_hosts"
	if f.s.SSH != nil {
		file = f.s.SSH.KnownHostsFile
	}
	f.plan.Add(plan.Step{
		ID: "forget-host-keys", Title: "Forget the VMs' host keys", After: after,
		Check: func(context.Context, func(string)) (plan.Verdict, error) {
			lines, err := f.b.Hosts.KnownHostKeys(f.s.Nodes)
			if err != nil {
				return plan.Verdict{}, err
			}
			if len(lines) == 0 {
				return plan.InPlace("no host key of the VMs in %s", file), nil
			}
			return plan.ToDo("%s of the VMs in %s", plural(len(lines), "host key line"), file), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			return x.Wet(fmt.Sprintf("remove the VMs' lines from %s (a new VM at the same address has a new key)", file), func(context.Context) error {
				_, err := f.b.Hosts.ForgetHostKeys(f.s.Nodes)
				return err
			})
		},
	})
	return "forget-host-keys"
}

func (f *builder) uninstallK3s(n profiles.Node) string {
	id := "k3s-uninstall/" + n.Name
	script := "k3s-uninstall.sh"
	if n.Role == profiles.RoleAgent {
		script = "k3s-agent-uninstall.sh"
	}
	f.plan.Add(plan.Step{
		ID: id, Title: "Uninstall K3s", Host: n.Name,
		Check: func(ctx context.Context, _ func(string)) (plan.Verdict, error) {
			k, err := f.b.K3s.ObserveK3s(ctx, n)
			if err != nil {
				return plan.Verdict{}, err
			}
			f.facts.Update(n.Name, func(fn *facts.Node) { fn.K3s = &k })
			if !k.Installed && !k.HasData {
				return plan.InPlace("k3s not installed"), nil
			}
			return plan.ToDo("%s", k.Reason()), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			return x.Wet(fmt.Sprintf("run %s (K3s's own uninstall: stops K3s, removes %s and /etc/rancher/k3s); host prerequisites stay", script, k3s.DataDir), func(ctx context.Context) error { return f.b.K3s.Uninstall(ctx, n) })
		},
	})
	return id
}

package flow

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/profiles"
)

// k3dNodeName is k3d's container name for a node named as the operator
// may: "agent-1" or "k3d-<cluster>-agent-1".
func k3dNodeName(k *profiles.K3d, name string) string {
	prefix := "k3d-" + k.ClusterName + "-"
	if strings.HasPrefix(name, prefix) {
		return name
	}
	return prefix + name
}

var k3dAgentRE = regexp.MustCompile(`-agent-\d+$`)

// rebuildK3d builds the rebuild of a k3d cluster's agent: its Node and
// container deleted, a new agent of the same name created through the
// k3d library and joined, its Node Ready. A server is refused: k3d's
// staging shape has one, and a new one would be a new cluster.
func rebuildK3d(p *profiles.Profile, name string, b Backends, o Options) (*plan.Plan, error) {
	k := p.Spec.K3d
	node := k3dNodeName(k, name)
	if !k3dAgentRE.MatchString(node) {
		return nil, fmt.Errorf("%s is a server of k3d cluster %s, which runs %d: a k3d server cannot be rebuilt in place (staging is not HA: a new server is a new cluster, its data gone); destroy and create the cluster instead (labctl destroy %s; labctl create %s)",
			node, k.ClusterName, k.Servers, p.Metadata.Name, p.Metadata.Name)
	}
	f := newBuilder(p, b, o, "rebuild "+node)
	if err := f.need(false, false, false, true, false); err != nil {
		return nil, err
	}
	if b.Local == nil {
		return nil, fmt.Errorf("%w for the local journal", ErrNoBackend)
	}
	host := dockerHostLabel(k)
	var nodes []facts.K3dNode
	f.plan.Add(plan.Step{
		ID: "k3d-observe", Title: "Observe the k3d cluster", Host: host,
		Check: func(ctx context.Context, _ func(string)) (plan.Verdict, error) {
			ns, err := b.K3d.Nodes(ctx)
			if err != nil {
				return plan.Verdict{}, err
			}
			nodes = ns
			j, inProgress, err := b.Local.Rebuild(node)
			if err != nil {
				return plan.Verdict{}, err
			}
			if inProgress {
				f.facts.SetRebuild(&j)
			}
			n, ok := findK3dNode(ns, node)
			switch {
			case !ok && !inProgress:
				var names []string
				for _, x := range ns {
					names = append(names, x.Name)
				}
				return plan.Verdict{}, fmt.Errorf("k3d cluster %s has no node %s (its nodes: %s)", k.ClusterName, node, strings.Join(names, ", "))
			case ok && n.Role != "agent":
				return plan.Verdict{}, fmt.Errorf("%s is a k3d %s: only agents are rebuilt", node, n.Role)
			case ok && n.Running && n.Ready && !inProgress && !o.Confirmed:
				return plan.Verdict{}, fmt.Errorf("%w: %s (its container runs, its Node is Ready); it is rebuilt only with --yes or the typed confirmation", ErrNodeHealthy, node)
			}
			return plan.InPlace("%s: %s", node, k3dNodeState(n, ok)), nil
		},
		Run: func(context.Context, *plan.Exec) error { return nil },
	})
	f.plan.Add(plan.Step{
		ID: "k3d-replace/" + node, Title: "Replace the k3d agent", Host: host, After: []string{"k3d-observe"},
		Check: func(context.Context, func(string)) (plan.Verdict, error) {
			return plan.ToDo("%s to be replaced", node), nil
		},
		Run: func(ctx context.Context, x *plan.Exec) error {
			n, ok := findK3dNode(nodes, node)
			j, _ := f.facts.Rebuild()
			save := func() error {
				if x.DryRun() {
					return nil
				}
				j.Node, j.MachineReplaced = node, true
				if j.Started.IsZero() {
					j.Started = f.o.Now()
				}
				return b.Local.SaveRebuild(j)
			}
			resumed := j.MachineReplaced
			if !resumed {
				if err := x.Wet("delete Node "+node+" from the cluster", func(ctx context.Context) error { return b.K3d.DeleteKubeNode(ctx, node) }); err != nil {
					return err
				}
				if ok {
					if err := x.Wet(fmt.Sprintf("delete k3d node %s (%s)", node, k3dNodeState(n, ok)), func(ctx context.Context) error { return b.K3d.DeleteNode(ctx, node) }); err != nil {
						return err
					}
				}
				if err := save(); err != nil {
					return err
				}
			}
			// After the old container is gone; a resumed run finds the new
			// one maybe half made: k3d's add then fails, so it goes first.
			if ok && resumed {
				if err := x.Wet("delete the half-made k3d node "+node, func(ctx context.Context) error { return b.K3d.DeleteNode(ctx, node) }); err != nil {
					return err
				}
			}
			if err := x.Wet(fmt.Sprintf("create k3d agent %s in cluster %s (settings copied from its agents) and join it", node, k.ClusterName), func(ctx context.Context) error { return b.K3d.AddAgent(ctx, node) }); err != nil {
				return err
			}
			return x.Wait("Node "+node+" Ready", func(ctx context.Context) error { return b.K3d.WaitNodeReady(ctx, node) })
		},
	})
	f.plan.Add(plan.Step{
		ID: "rebuild-done", Title: "Close the rebuild", After: []string{"k3d-replace/" + node},
		Check: func(context.Context, func(string)) (plan.Verdict, error) { return plan.ToDo("%s is back", node), nil },
		Run: func(ctx context.Context, x *plan.Exec) error {
			return x.Wet("forget the rebuild journal of "+node, func(context.Context) error { return b.Local.ForgetRebuild(node) })
		},
	})
	return f.plan, nil
}

func findK3dNode(ns []facts.K3dNode, name string) (facts.K3dNode, bool) {
	for _, n := range ns {
		if n.Name == name {
			return n, true
		}
	}
	return facts.K3dNode{}, false
}

func k3dNodeState(n facts.K3dNode, exists bool) string {
	switch {
	case !exists:
		return "no container (removed earlier in this rebuild)"
	case !n.Running:
		return "container stopped"
	case !n.Ready:
		return "container running, Node not Ready"
	}
	return "container running, Node Ready"
}

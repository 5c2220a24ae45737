// Package kube is the cluster's Kubernetes API as labctl uses it for
// lifecycle work: reached through one named server (never the node being
// repaired), with the admin credentials that server's K3s wrote; it
// lists, cordons, drains and deletes Nodes and K3s's node-password
// Secrets.
package kube

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	api "k8s.io/client-go/tools/clientcmd/api"

	"github.com/labctl/labctl/facts"
)

// Client is the API through one server.
type Client struct {
	cs kubernetes.Interface
	// rc is the REST config (nil for a wrapped clientset): verify's
	// metadata-only and dynamic reads, Flux's client.
	rc *rest.Config
	// Server is the API address used.
	Server string
}

// REST is the client's REST config, nil for a wrapped clientset.
func (c *Client) REST() *rest.Config { return c.rc }

// New is a client for the admin kubeconfig cfg (already pointed at a
// reachable server).
func New(cfg *api.Config) (*Client, error) {
	rc, err := clientcmd.NewDefaultClientConfig(*cfg, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, err
	}
	rc.Timeout = 30 * time.Second
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	return &Client{cs: cs, rc: rc, Server: rc.Host}, nil
}

// NewFor wraps a clientset (tests).
func NewFor(cs kubernetes.Interface) *Client { return &Client{cs: cs} }

// EtcdNodeAnnotation is K3s's annotation naming a server Node's etcd member.
const EtcdNodeAnnotation = "etcd.k3s.cattle.io/node-name"

// PasswordSecret is the name of K3s's node-password Secret for a node.
func PasswordSecret(node string) string { return node + ".node-password.k3s" }

func nodeFact(n *corev1.Node) facts.KubeNode {
	kn := facts.KubeNode{Name: n.Name, Unschedulable: n.Spec.Unschedulable, EtcdMember: n.Annotations[EtcdNodeAnnotation], Why: "no Ready condition yet"}
	if n.Spec.Unschedulable && n.Annotations[CordonAnnotation] != "" {
		kn.CordonedBy = "labctl"
	}
	for l := range n.Labels {
		if r, ok := strings.CutPrefix(l, "node-role.kubernetes.io/"); ok {
			kn.Roles = append(kn.Roles, r)
		}
	}
	slices.Sort(kn.Roles)
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			kn.Address = a.Address
		}
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			kn.Ready, kn.Why = c.Status == corev1.ConditionTrue, ""
			if !kn.Ready {
				kn.Why = c.Reason + ": " + c.Message
			}
		}
	}
	return kn
}

// Nodes lists the Node objects.
func (c *Client) Nodes(ctx context.Context) ([]facts.KubeNode, error) {
	nl, err := c.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := make([]facts.KubeNode, len(nl.Items))
	for i := range nl.Items {
		out[i] = nodeFact(&nl.Items[i])
	}
	return out, nil
}

// DeleteNode deletes the Node; false when there was none.
func (c *Client) DeleteNode(ctx context.Context, name string) (bool, error) {
	err := c.cs.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// HasPasswordSecret reports whether K3s's node-password Secret of node is
// there.
func (c *Client) HasPasswordSecret(ctx context.Context, node string) (bool, error) {
	_, err := c.cs.CoreV1().Secrets("kube-system").Get(ctx, PasswordSecret(node), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// DeletePasswordSecret deletes it; a missing one is no error.
func (c *Client) DeletePasswordSecret(ctx context.Context, node string) error {
	err := c.cs.CoreV1().Secrets("kube-system").Delete(ctx, PasswordSecret(node), metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// CordonAnnotation marks a cordon labctl made, so that labctl lifts only
// its own (an operator's cordon stays).
const CordonAnnotation = "labctl.dev/cordoned"

// Cordon marks the Node unschedulable, noting that labctl did (unless it
// was cordoned already: then it is not labctl's to lift).
func (c *Client) Cordon(ctx context.Context, name string) error {
	n, err := c.cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if n.Spec.Unschedulable {
		return nil
	}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"true"}},"spec":{"unschedulable":true}}`, CordonAnnotation)
	_, err = c.cs.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	return err
}

// Uncordon lifts a cordon labctl made.
func (c *Client) Uncordon(ctx context.Context, name string) error {
	n, err := c.cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if n.Annotations[CordonAnnotation] == "" {
		return nil
	}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:null}},"spec":{"unschedulable":false}}`, CordonAnnotation)
	_, err = c.cs.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	return err
}

// ErrDrainBlocked says pods could not be evicted before the timeout,
// PodDisruptionBudgets or not.
var ErrDrainBlocked = errors.New("drain blocked")

// Drain evicts the node's pods through the Eviction API, so
// PodDisruptionBudgets are respected: DaemonSet pods and static (mirror)
// pods stay, as kubectl drain leaves them. An eviction a budget refuses is
// retried until timeout; then the error names each pod still there and
// why.
func (c *Client) Drain(ctx context.Context, name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pods, err := c.evictable(ctx, name)
		if err != nil {
			return err
		}
		if len(pods) == 0 {
			return nil
		}
		blocked := map[string]string{}
		for _, p := range pods {
			if p.DeletionTimestamp != nil {
				blocked[p.Namespace+"/"+p.Name] = "terminating"
				continue
			}
			ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace}}
			err := c.cs.CoreV1().Pods(p.Namespace).EvictV1(ctx, ev)
			switch {
			case err == nil, apierrors.IsNotFound(err):
				blocked[p.Namespace+"/"+p.Name] = "evicted, terminating"
			case apierrors.IsTooManyRequests(err):
				blocked[p.Namespace+"/"+p.Name] = "refused by its PodDisruptionBudget: " + c.budgetOf(ctx, &p)
			default:
				return fmt.Errorf("evict %s/%s: %w", p.Namespace, p.Name, err)
			}
		}
		if time.Now().After(deadline) {
			var parts []string
			for k, v := range blocked {
				parts = append(parts, k+" ("+v+")")
			}
			sort.Strings(parts)
			return fmt.Errorf("%w: node %s still runs %s after %s", ErrDrainBlocked, name, strings.Join(parts, ", "), timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// evictable lists the node's pods a drain moves.
func (c *Client) evictable(ctx context.Context, node string) ([]corev1.Pod, error) {
	pl, err := c.cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range pl.Items {
		if _, mirror := p.Annotations[corev1.MirrorPodAnnotationKey]; mirror {
			continue
		}
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		daemon := false
		for _, o := range p.OwnerReferences {
			daemon = daemon || o.Kind == "DaemonSet"
		}
		if !daemon {
			out = append(out, p)
		}
	}
	return out, nil
}

// budgetOf names the PodDisruptionBudgets selecting pod p.
func (c *Client) budgetOf(ctx context.Context, p *corev1.Pod) string {
	pdbs, err := c.cs.PolicyV1().PodDisruptionBudgets(p.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return "(budgets not readable: " + err.Error() + ")"
	}
	var names []string
	for _, b := range pdbs.Items {
		sel, err := metav1.LabelSelectorAsSelector(b.Spec.Selector)
		if err == nil && sel.Matches(labels.Set(p.Labels)) {
			names = append(names, fmt.Sprintf("%s (%d disruptions allowed)", b.Name, b.Status.DisruptionsAllowed))
		}
	}
	if len(names) == 0 {
		return "(none found)"
	}
	return strings.Join(names, ", ")
}

package k3s

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	api "k8s.io/client-go/tools/clientcmd/api"

	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/kubeconfig"
	"github.com/labctl/labctl/provision/remote"
)

// Hosts gives the pooled connection of a node (provision/nodes.Backend).
type Hosts interface {
	Host(ctx context.Context, n profiles.Node) (*remote.Host, error)
}

// Backend installs K3s on a profile's nodes over SSH.
type Backend struct {
	Hosts Hosts
	Spec  *profiles.Spec
	// Profile names the kubeconfig context.
	Profile string
	Token   profiles.Secret
	// Kubeconfig is the file the context is merged into.
	Kubeconfig string
	// WaitTimeout bounds WaitMember (default 5 minutes).
	WaitTimeout time.Duration

	mu       sync.Mutex
	decision *Decision
}

// Paths of K3s's etcd client certificate on a server.
const (
	etcdCA         = "/var/lib/rancher/k3s/server/tls/etcd/server-ca.crt"
	etcdClientCert = "/var/lib/rancher/k3s/server/tls/etcd/client.crt"
	etcdClientKey  = "/var/lib/rancher/k3s/server/tls/etcd/client.key"
	// K3s's admin client certificate, for asking the local API server.
	apiCA         = "/var/lib/rancher/k3s/server/tls/server-ca.crt"
	apiClientCert = "/var/lib/rancher/k3s/server/tls/client-admin.crt"
	apiClientKey  = "/var/lib/rancher/k3s/server/tls/client-admin.key"
	serverCA      = "/var/lib/rancher/k3s/server/tls/server-ca.crt"
	dbDir         = "/var/lib/rancher/k3s/server/db"
)

// observeScript prints one server's K3s state, read-only.
var observeScript = `if [ -d ` + dbDir + `/etcd/member ]; then echo data=yes; else echo data=no; fi
echo "active=$(systemctl is-active k3s 2>/dev/null)"
if [ -f ` + serverCA + ` ]; then echo "ca=$(sha256sum < ` + serverCA + ` | cut -d' ' -f1)"; fi
if [ -f ` + TokenPath + ` ]; then echo "token=$(sha256sum < ` + TokenPath + ` | cut -d' ' -f1)"; fi`

func facts(out string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// Decide observes every server once per run and decides where the cluster
// comes from (see the package function Decide).
func (b *Backend) Decide(ctx context.Context) (Decision, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.decision != nil {
		return *b.decision, nil
	}
	var states []ServerState
	for _, n := range b.Spec.Servers() {
		st := ServerState{Node: n}
		h, err := b.Hosts.Host(ctx, n)
		if err == nil {
			var res remote.Result
			res, err = h.Run(ctx, remote.Cmd{Script: observeScript, Sudo: true})
			f := facts(res.Stdout)
			st.HasData, st.Active, st.CAHash = f["data"] == "yes", f["active"] == "active", f["ca"]
		}
		st.Err = err
		states = append(states, st)
	}
	d, err := Decide(states)
	if err != nil {
		return d, err
	}
	b.decision = &d
	return d, nil
}

// Installed reports whether n already runs K3s as a started etcd member
// with the cluster token labctl would write.
func (b *Backend) Installed(ctx context.Context, n profiles.Node) (bool, error) {
	h, err := b.Hosts.Host(ctx, n)
	if err != nil {
		return false, err
	}
	res, err := h.Run(ctx, remote.Cmd{Script: observeScript, Sudo: true})
	if err != nil {
		return false, err
	}
	f := facts(res.Stdout)
	sum := sha256.Sum256([]byte(b.Token.Reveal() + "\n"))
	if f["active"] != "active" || f["token"] != hex.EncodeToString(sum[:]) {
		return false, nil
	}
	return b.member(ctx, h, n)
}

// WriteToken puts the cluster token on the node (0600, root).
func (b *Backend) WriteToken(ctx context.Context, n profiles.Node) error {
	h, err := b.Hosts.Host(ctx, n)
	if err != nil {
		return err
	}
	return h.Upload(ctx, TokenPath, []byte(b.Token.Reveal()+"\n"), 0o600, true)
}

// WriteConfig puts the node's config.yaml in place.
func (b *Backend) WriteConfig(ctx context.Context, n profiles.Node, join *profiles.Node) error {
	h, err := b.Hosts.Host(ctx, n)
	if err != nil {
		return err
	}
	return h.Upload(ctx, ConfigPath, NodeConfig(b.Spec, n, join).Render(), 0o600, true)
}

// Install uploads air-gap files if any, then runs the install command,
// which returns when the k3s service has started.
func (b *Backend) Install(ctx context.Context, n profiles.Node) error {
	h, err := b.Hosts.Host(ctx, n)
	if err != nil {
		return err
	}
	in := InstallFor(b.Spec, n)
	for _, u := range in.Uploads {
		p, err := profiles.ExpandHome(u.Local)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("air-gapped install (spec.k3s.airgap): %w", err)
		}
		if err := h.Upload(ctx, u.Remote, data, os.FileMode(u.Mode), true); err != nil {
			return err
		}
	}
	_, err = h.Run(ctx, remote.Cmd{Script: in.Command, Sudo: true})
	return err
}

// WaitMember waits until n's etcd member is started and promoted and its
// Node is Ready, asking etcd and the API server on the node itself.
func (b *Backend) WaitMember(ctx context.Context, n profiles.Node) error {
	h, err := b.Hosts.Host(ctx, n)
	if err != nil {
		return err
	}
	timeout := b.WaitTimeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	deadline := time.Now().Add(timeout)
	for {
		ok, err := b.member(ctx, h, n)
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not a Ready etcd server after %s: %w", n.Name, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// ErrNotMember says a server is not (yet) a started etcd voting member.
var ErrNotMember = errors.New("not a started etcd member")

// ErrNodeNotReady says a server's Node is missing or not Ready.
var ErrNodeNotReady = errors.New("node not Ready")

// memberScript asks, in one command, etcd's gRPC gateway for the member
// list and the local API server for the node's Node object.
func memberScript(node string) string {
	return fmt.Sprintf("curl -sS --max-time 10 --cacert %s --cert %s --key %s -X POST https://127.0.0.1:2379/v3/cluster/member/list -d '{}'\n"+
		"echo; echo '%s'\n"+
		"curl -sS --max-time 10 --cacert %s --cert %s --key %s https://127.0.0.1:6443/api/v1/nodes/%s\n",
		etcdCA, etcdClientCert, etcdClientKey, nodeSeparator, apiCA, apiClientCert, apiClientKey, node)
}

const nodeSeparator = "--- node"

// member reports whether n is a started, promoted etcd member whose Node
// is Ready (one SSH command).
func (b *Backend) member(ctx context.Context, h *remote.Host, n profiles.Node) (bool, error) {
	res, err := h.Run(ctx, remote.Cmd{Sudo: true, Script: memberScript(n.Name)})
	if err != nil {
		return false, err
	}
	members, node, _ := strings.Cut(res.Stdout, "\n"+nodeSeparator+"\n")
	if ok, err := isMember(members, n); !ok {
		return false, err
	}
	return nodeReady(node, n)
}

// nodeReady reads a Node object (or the API's error Status).
func nodeReady(body string, n profiles.Node) (bool, error) {
	var obj struct {
		Kind    string `json:"kind"`
		Message string `json:"message"`
		Status  struct {
			Conditions []struct {
				Type, Status, Reason, Message string
			} `json:"conditions"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(body), &obj); err != nil {
		return false, fmt.Errorf("%s: %w: the API server did not answer: %s", n.Name, ErrNodeNotReady, firstLine(body))
	}
	if obj.Kind != "Node" {
		return false, fmt.Errorf("%s: %w: %s", n.Name, ErrNodeNotReady, obj.Message)
	}
	for _, c := range obj.Status.Conditions {
		if c.Type == "Ready" {
			if c.Status == "True" {
				return true, nil
			}
			return false, fmt.Errorf("%s: %w: %s: %s", n.Name, ErrNodeNotReady, c.Reason, c.Message)
		}
	}
	return false, fmt.Errorf("%s: %w: no Ready condition yet", n.Name, ErrNodeNotReady)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// isMember reads etcd's member list.
func isMember(body string, n profiles.Node) (bool, error) {
	var list struct {
		Members []struct {
			Name       string   `json:"name"`
			ClientURLs []string `json:"clientURLs"`
			IsLearner  bool     `json:"isLearner"`
		} `json:"members"`
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		return false, fmt.Errorf("%s: etcd member list: %w", n.Name, err)
	}
	for _, m := range list.Members {
		if strings.HasPrefix(m.Name, n.Name+"-") && !m.IsLearner && len(m.ClientURLs) > 0 {
			return true, nil
		}
	}
	return false, fmt.Errorf("%s: %w", n.Name, ErrNotMember)
}

// ErrNoKubeconfig is returned when no server has /etc/rancher/k3s/k3s.yaml.
var ErrNoKubeconfig = errors.New("no K3s kubeconfig on the server")

// FetchKubeconfig reads k3s.yaml from server n; it holds the admin client
// key, so it is never logged.
func (b *Backend) FetchKubeconfig(ctx context.Context, n profiles.Node) ([]byte, error) {
	h, err := b.Hosts.Host(ctx, n)
	if err != nil {
		return nil, err
	}
	res, err := h.Run(ctx, remote.Cmd{Script: "test -f " + KubeconfigPath + " || exit 3; cat " + KubeconfigPath, Sudo: true})
	var ee *remote.ExitError
	if errors.As(err, &ee) && ee.Status == 3 {
		return nil, fmt.Errorf("%s: %w (%s is missing)", n.Name, ErrNoKubeconfig, KubeconfigPath)
	}
	if err != nil {
		return nil, err
	}
	return []byte(res.Stdout), nil
}

// MergeKubeconfig fetches the kubeconfig from the first server that has
// one and merges it as context Profile with that server's address. It
// returns the server used and whether the file changed.
func (b *Backend) MergeKubeconfig(ctx context.Context, switchContext bool) (profiles.Node, bool, error) {
	n, cfg, err := b.clusterKubeconfig(ctx)
	if err != nil {
		return n, false, err
	}
	changed, err := kubeconfig.Merge(b.Kubeconfig, cfg, switchContext)
	return n, changed, err
}

// KubeconfigCurrent reports whether the merged kubeconfig already holds
// what MergeKubeconfig would write.
func (b *Backend) KubeconfigCurrent(ctx context.Context) (bool, error) {
	_, cfg, err := b.clusterKubeconfig(ctx)
	if err != nil {
		return false, err
	}
	return kubeconfig.Current(b.Kubeconfig, cfg, false)
}

func (b *Backend) clusterKubeconfig(ctx context.Context) (profiles.Node, *api.Config, error) {
	var tried []string
	for _, n := range b.Spec.Servers() {
		raw, err := b.FetchKubeconfig(ctx, n)
		if err != nil {
			tried = append(tried, err.Error())
			continue
		}
		cfg, err := kubeconfig.Rename(raw, b.Profile, ServerURL(n))
		if err != nil {
			return n, nil, fmt.Errorf("%s: %s: %w", n.Name, KubeconfigPath, err)
		}
		return n, cfg, nil
	}
	return profiles.Node{}, nil, fmt.Errorf("no server gave its kubeconfig:\n  %s", strings.Join(tried, "\n  "))
}

// WriteKubeconfig is the flow's kubeconfig step.
func (b *Backend) WriteKubeconfig(ctx context.Context) error {
	_, _, err := b.MergeKubeconfig(ctx, false)
	return err
}

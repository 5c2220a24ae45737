package nodes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	api "k8s.io/client-go/tools/clientcmd/api"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/k3s"
	"github.com/labctl/labctl/provision/kube"
	"github.com/labctl/labctl/provision/kubeconfig"
	"github.com/labctl/labctl/provision/remote"
)

// Token is the profile's cluster token, resolved when first needed: a
// read-only run (plan --observe) only peeks at it, a run that installs
// K3s generates it if there is none yet.
type Token struct {
	Dir, Profile string
	Ref          *profiles.SecretRef
	Lookup       func(string) (string, bool)
	// Redact learns the token as soon as it is known.
	Redact *remote.Redactor
	// Created is called once when a new token was generated.
	Created func()

	mu  sync.Mutex
	tok profiles.Secret
}

// Peek returns the token if one exists (a reference, or one in state),
// never generating one.
func (t *Token) Peek() (profiles.Secret, bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.tok.IsZero() {
		return t.tok, true, nil
	}
	tok, ok, err := k3s.ExistingToken(t.Dir, t.Profile, t.Ref, t.lookup())
	if ok {
		t.keep(tok)
	}
	return tok, ok, err
}

// Get returns the token, generating and keeping one on first use.
func (t *Token) Get() (profiles.Secret, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.tok.IsZero() {
		return t.tok, nil
	}
	tok, created, err := k3s.ClusterToken(t.Dir, t.Profile, t.Ref, t.lookup())
	if err != nil {
		return tok, err
	}
	t.keep(tok)
	if created && t.Created != nil {
		t.Created()
	}
	return tok, nil
}

func (t *Token) keep(tok profiles.Secret) {
	t.tok = tok
	if t.Redact != nil {
		t.Redact.Add(tok)
	}
}

func (t *Token) lookup() func(string) (string, bool) {
	if t.Lookup == nil {
		return os.LookupEnv
	}
	return t.Lookup
}

// K3s installs, observes and removes K3s on a profile's nodes over SSH
// (the flow's K3s provider).
type K3s struct {
	Hosts *Backend
	Spec  *profiles.Spec
	// Profile names the kubeconfig context.
	Profile string
	Token   *Token
	// Kubeconfig is the file the context is merged into.
	Kubeconfig string
	// WaitTimeout bounds WaitMember (default 5 minutes); DrainTimeout a
	// drain (default DrainTimeout).
	WaitTimeout, DrainTimeout time.Duration

	mu      sync.Mutex
	clients map[string]*kube.Client
}

func (b *K3s) run(ctx context.Context, n profiles.Node, script string) (string, error) {
	h, err := b.Hosts.Host(ctx, n)
	if err != nil {
		return "", err
	}
	res, err := h.Run(ctx, remote.Cmd{Script: script, Sudo: true})
	return res.Stdout, err
}

// ObserveK3s reads, read-only, what node n runs of K3s.
func (b *K3s) ObserveK3s(ctx context.Context, n profiles.Node) (facts.K3s, error) {
	out, err := b.run(ctx, n, k3s.ObserveScript)
	if err != nil {
		return facts.K3s{}, err
	}
	hash := ""
	if tok, ok, err := b.Token.Peek(); err != nil {
		return facts.K3s{}, err
	} else if ok {
		hash = k3s.TokenHash(tok.Reveal())
	}
	k, err := k3s.ParseObservation(out, hash)
	if err != nil {
		return k, fmt.Errorf("%s: %w", n.Name, err)
	}
	return k, nil
}

// ObserveEtcd reads etcd's members through server via, each member's
// health asked through its own client URL.
func (b *K3s) ObserveEtcd(ctx context.Context, via profiles.Node) (facts.Etcd, error) {
	var addrs []string
	for _, s := range b.Spec.Servers() {
		addrs = append(addrs, s.Address)
	}
	out, err := b.run(ctx, via, k3s.EtcdScript(addrs))
	if err != nil {
		return facts.Etcd{Via: via.Name}, err
	}
	return k3s.ParseEtcd(out, via.Name)
}

// ObserveKubeNodes lists the cluster's Node objects through server via.
func (b *K3s) ObserveKubeNodes(ctx context.Context, via profiles.Node) ([]facts.KubeNode, error) {
	out, err := b.run(ctx, via, k3s.NodesScript)
	if err != nil {
		return nil, err
	}
	ns, err := k3s.ParseNodes(out)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", via.Name, err)
	}
	return ns, nil
}

// WriteToken puts the cluster token on the node (0600, root).
func (b *K3s) WriteToken(ctx context.Context, n profiles.Node) error {
	tok, err := b.Token.Get()
	if err != nil {
		return err
	}
	h, err := b.Hosts.Host(ctx, n)
	if err != nil {
		return err
	}
	return h.Upload(ctx, k3s.TokenPath, []byte(tok.Reveal()+"\n"), 0o600, true)
}

// WriteConfig puts the node's config.yaml in place.
func (b *K3s) WriteConfig(ctx context.Context, n profiles.Node, join *profiles.Node) error {
	h, err := b.Hosts.Host(ctx, n)
	if err != nil {
		return err
	}
	return h.Upload(ctx, k3s.ConfigPath, k3s.NodeConfig(b.Spec, n, join).Render(), 0o600, true)
}

// Install uploads air-gap files if any, then runs the install command,
// which returns when the k3s service has started; its output is the
// step's progress.
func (b *K3s) Install(ctx context.Context, n profiles.Node) error {
	h, err := b.Hosts.Host(ctx, n)
	if err != nil {
		return err
	}
	in := k3s.InstallFor(b.Spec, n)
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
	_, err = h.Run(ctx, remote.Cmd{Script: in.Command, Sudo: true, Output: lines(ctx)})
	return err
}

// lines forwards a command's output to the running step's progress.
func lines(ctx context.Context) func(stream, line string) {
	out := plan.Output(ctx)
	return func(_, line string) { out(line) }
}

// Uninstall runs K3s's own uninstall script (k3s-uninstall.sh on a
// server, k3s-agent-uninstall.sh on an agent), which stops K3s and
// removes its data, leaving the host's other packages alone.
func (b *K3s) Uninstall(ctx context.Context, n profiles.Node) error {
	h, err := b.Hosts.Host(ctx, n)
	if err != nil {
		return err
	}
	_, err = h.Run(ctx, remote.Cmd{Script: k3s.UninstallScript, Sudo: true, Output: lines(ctx)})
	return err
}

func (b *K3s) timeout() time.Duration {
	if b.WaitTimeout == 0 {
		return 5 * time.Minute
	}
	return b.WaitTimeout
}

// WaitMember waits until n is in the cluster: a server until its own etcd
// member (by the name in its data, at its address) is started and
// promoted and its Node is Ready, asked on the node itself; an agent
// until k3s-agent runs and its Node is Ready, asked through a server.
func (b *K3s) WaitMember(ctx context.Context, n profiles.Node) error {
	deadline := time.Now().Add(b.timeout())
	for {
		err := b.memberReady(ctx, n)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not in the cluster after %s: %w", n.Name, b.timeout(), err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// CheckMember reports, once, why n is not yet in the cluster (nil when
// it is); member is the etcd member name n's data holds, as observed.
func (b *K3s) CheckMember(ctx context.Context, n profiles.Node, member string) error {
	if n.Role == profiles.RoleAgent {
		return b.agentReady(ctx, n)
	}
	return b.serverMember(ctx, n, member)
}

func (b *K3s) memberReady(ctx context.Context, n profiles.Node) error {
	if n.Role == profiles.RoleAgent {
		return b.agentReady(ctx, n)
	}
	k, err := b.ObserveK3s(ctx, n)
	if err != nil {
		return err
	}
	return b.serverMember(ctx, n, k.Member)
}

func (b *K3s) serverMember(ctx context.Context, n profiles.Node, member string) error {
	out, err := b.run(ctx, n, k3s.MemberCheckScript(n.Name))
	if err != nil {
		return err
	}
	return k3s.CheckMember(out, n, member)
}

// ErrAgentNotReady says an agent's k3s-agent is not running or its Node
// not Ready.
var ErrAgentNotReady = errors.New("agent not Ready")

func (b *K3s) agentReady(ctx context.Context, n profiles.Node) error {
	k, err := b.ObserveK3s(ctx, n)
	if err != nil {
		return err
	}
	if !k.Active || k.Unit != "k3s-agent" {
		return fmt.Errorf("%s: %w: %s", n.Name, ErrAgentNotReady, k.Reason())
	}
	var tried []string
	for _, s := range b.Spec.Servers() {
		ns, err := b.ObserveKubeNodes(ctx, s)
		if err != nil {
			tried = append(tried, err.Error())
			continue
		}
		for _, kn := range ns {
			if kn.Name == n.Name {
				if kn.Ready {
					return nil
				}
				return fmt.Errorf("%s: %w: %s", n.Name, ErrAgentNotReady, kn.Reason())
			}
		}
		return fmt.Errorf("%s: %w: no Node %s yet (asked %s)", n.Name, ErrAgentNotReady, n.Name, s.Name)
	}
	return fmt.Errorf("%s: %w: no server answered: %s", n.Name, ErrAgentNotReady, strings.Join(tried, "; "))
}

// ErrNoKubeconfig is returned when no server has /etc/rancher/k3s/k3s.yaml.
var ErrNoKubeconfig = errors.New("no K3s kubeconfig on the server")

// FetchKubeconfig reads k3s.yaml from server n; it holds the admin client
// key, so it is never logged.
func (b *K3s) FetchKubeconfig(ctx context.Context, n profiles.Node) ([]byte, error) {
	h, err := b.Hosts.Host(ctx, n)
	if err != nil {
		return nil, err
	}
	res, err := h.Run(ctx, remote.Cmd{Script: "test -f " + k3s.KubeconfigPath + " || exit 3; cat " + k3s.KubeconfigPath, Sudo: true})
	var ee *remote.ExitError
	if errors.As(err, &ee) && ee.Status == 3 {
		return nil, fmt.Errorf("%s: %w (%s is missing)", n.Name, ErrNoKubeconfig, k3s.KubeconfigPath)
	}
	if err != nil {
		return nil, err
	}
	return []byte(res.Stdout), nil
}

// MergeKubeconfig fetches the kubeconfig from the first server that has
// one and merges it as context Profile with that server's address. It
// returns the server used and whether the file changed.
func (b *K3s) MergeKubeconfig(ctx context.Context, switchContext bool) (profiles.Node, bool, error) {
	n, cfg, err := b.clusterKubeconfig(ctx)
	if err != nil {
		return n, false, err
	}
	changed, err := kubeconfig.Merge(b.Kubeconfig, cfg, switchContext)
	return n, changed, err
}

// KubeconfigCurrent reports whether the merged kubeconfig already holds
// what MergeKubeconfig would write.
func (b *K3s) KubeconfigCurrent(ctx context.Context) (facts.Kubeconfig, error) {
	n, cfg, err := b.clusterKubeconfig(ctx)
	if err != nil {
		return facts.Kubeconfig{}, err
	}
	ok, err := kubeconfig.Current(b.Kubeconfig, cfg, false)
	return facts.Kubeconfig{Current: ok, Server: k3s.ServerURL(n)}, err
}

// clusterKubeconfig takes the kubeconfig of the first server that gives
// one: a dead server is passed over, so the context points at one that
// answers.
func (b *K3s) clusterKubeconfig(ctx context.Context) (profiles.Node, *api.Config, error) {
	var tried []string
	for _, n := range b.Spec.Servers() {
		raw, err := b.FetchKubeconfig(ctx, n)
		if err != nil {
			tried = append(tried, err.Error())
			continue
		}
		cfg, err := kubeconfig.Rename(raw, b.Profile, k3s.ServerURL(n))
		if err != nil {
			return n, nil, fmt.Errorf("%s: %s: %w", n.Name, k3s.KubeconfigPath, err)
		}
		return n, cfg, nil
	}
	return profiles.Node{}, nil, fmt.Errorf("no server gave its kubeconfig:\n  %s", strings.Join(tried, "\n  "))
}

// WriteKubeconfig is the flow's kubeconfig step.
func (b *K3s) WriteKubeconfig(ctx context.Context) error {
	_, _, err := b.MergeKubeconfig(ctx, false)
	return err
}

// RemoveContext removes the profile's context from the kubeconfig.
func (b *K3s) RemoveContext(context.Context) (bool, error) {
	return kubeconfig.Remove(b.Kubeconfig, b.Profile)
}

// HasContext reports whether the kubeconfig holds the profile's context.
func (b *K3s) HasContext(context.Context) (bool, error) {
	return kubeconfig.Has(b.Kubeconfig, b.Profile)
}

// API is the cluster's API through server via (verify's reads).
func (b *K3s) API(ctx context.Context, via profiles.Node) (*kube.Client, error) {
	return b.api(ctx, via)
}

// api is the cluster's API through server via, with the admin
// credentials via's K3s wrote (read over SSH, never logged): one client
// per server per run.
func (b *K3s) api(ctx context.Context, via profiles.Node) (*kube.Client, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c, ok := b.clients[via.Name]; ok {
		return c, nil
	}
	raw, err := b.FetchKubeconfig(ctx, via)
	if err != nil {
		return nil, err
	}
	cfg, err := kubeconfig.Rename(raw, b.Profile, k3s.ServerURL(via))
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", via.Name, k3s.KubeconfigPath, err)
	}
	c, err := kube.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", via.Name, err)
	}
	if b.clients == nil {
		b.clients = map[string]*kube.Client{}
	}
	b.clients[via.Name] = c
	return c, nil
}

// DeleteNode deletes Node name through server via.
func (b *K3s) DeleteNode(ctx context.Context, via profiles.Node, name string) error {
	c, err := b.api(ctx, via)
	if err != nil {
		return err
	}
	_, err = c.DeleteNode(ctx, name)
	return err
}

// HasNodePassword reports whether K3s's node-password Secret of name is
// there.
func (b *K3s) HasNodePassword(ctx context.Context, via profiles.Node, name string) (bool, error) {
	c, err := b.api(ctx, via)
	if err != nil {
		return false, err
	}
	return c.HasPasswordSecret(ctx, name)
}

// DeleteNodePassword deletes that Secret.
func (b *K3s) DeleteNodePassword(ctx context.Context, via profiles.Node, name string) error {
	c, err := b.api(ctx, via)
	if err != nil {
		return err
	}
	return c.DeletePasswordSecret(ctx, name)
}

// Cordon marks Node name unschedulable.
func (b *K3s) Cordon(ctx context.Context, via profiles.Node, name string) error {
	c, err := b.api(ctx, via)
	if err != nil {
		return err
	}
	return c.Cordon(ctx, name)
}

// Uncordon lifts a cordon labctl made on Node name.
func (b *K3s) Uncordon(ctx context.Context, via profiles.Node, name string) error {
	c, err := b.api(ctx, via)
	if err != nil {
		return err
	}
	return c.Uncordon(ctx, name)
}

// Restart restarts the node's K3s service (systemd returns once it is up:
// K3s's units are Type=notify).
func (b *K3s) Restart(ctx context.Context, n profiles.Node) error {
	unit := "k3s"
	if n.Role == profiles.RoleAgent {
		unit = "k3s-agent"
	}
	_, err := b.run(ctx, n, "systemctl restart "+unit)
	return err
}

// DrainTimeout bounds a drain (PodDisruptionBudgets can hold it).
const DrainTimeout = 5 * time.Minute

// Drain evicts Node name's pods, budgets respected.
func (b *K3s) Drain(ctx context.Context, via profiles.Node, name string) error {
	c, err := b.api(ctx, via)
	if err != nil {
		return err
	}
	timeout := b.DrainTimeout
	if timeout == 0 {
		timeout = DrainTimeout
	}
	return c.Drain(ctx, name, timeout)
}

// RemoveMember removes an etcd member through etcd's API on server via.
func (b *K3s) RemoveMember(ctx context.Context, via profiles.Node, m facts.Member) error {
	script, err := k3s.MemberRemoveScript(m)
	if err != nil {
		return err
	}
	out, err := b.run(ctx, via, script)
	if err != nil {
		return err
	}
	if !strings.Contains(out, `"header"`) {
		return fmt.Errorf("%s: etcd refused to remove member %s: %s", via.Name, m.Name, strings.TrimSpace(out))
	}
	return nil
}

// SaveSnapshot runs `k3s etcd-snapshot save --name name` on server on and
// returns the file it wrote there.
func (b *K3s) SaveSnapshot(ctx context.Context, on profiles.Node, name string) (facts.Snapshot, error) {
	out, err := b.run(ctx, on, k3s.SnapshotSaveScript(name))
	if err != nil {
		return facts.Snapshot{}, err
	}
	snap, err := k3s.ParseSnapshotSaved(out, name)
	if err != nil {
		return snap, fmt.Errorf("%s: %w", on.Name, err)
	}
	snap.Node = on.Name
	return snap, nil
}

// FetchSnapshot copies snapshot snap from server on to local (0600,
// written whole or not at all).
func (b *K3s) FetchSnapshot(ctx context.Context, on profiles.Node, snap facts.Snapshot, local string) error {
	h, err := b.Hosts.Host(ctx, on)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(local), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(local), "."+filepath.Base(local)+".*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	n, err := h.Download(ctx, snap.Path, tmp, true)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy snapshot %s from %s: %w", snap.Name, on.Name, err)
	}
	if snap.Size > 0 && n != snap.Size {
		return fmt.Errorf("copy snapshot %s from %s: %d bytes, the file has %d", snap.Name, on.Name, n, snap.Size)
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), local)
}

// Stop stops the node's K3s service.
func (b *K3s) Stop(ctx context.Context, n profiles.Node) error {
	_, err := b.run(ctx, n, "systemctl stop "+unitOf(n))
	return err
}

// Start starts it (returning once it is up: a Type=notify unit).
func (b *K3s) Start(ctx context.Context, n profiles.Node) error {
	_, err := b.run(ctx, n, "systemctl start "+unitOf(n))
	return err
}

func unitOf(n profiles.Node) string {
	if n.Role == profiles.RoleAgent {
		return "k3s-agent"
	}
	return "k3s"
}

// ClusterReset runs K3s's cluster reset on a stopped server: etcd's
// membership reset to this one member, from restorePath when given (an
// etcd snapshot on the node). It returns when K3s says the reset is done.
func (b *K3s) ClusterReset(ctx context.Context, n profiles.Node, restorePath string) error {
	h, err := b.Hosts.Host(ctx, n)
	if err != nil {
		return err
	}
	_, err = h.Run(ctx, remote.Cmd{Script: k3s.ClusterResetScript(restorePath), Sudo: true, Output: lines(ctx)})
	return err
}

// MoveServerDB moves a server's etcd data aside (kept as a backup), so
// that it joins afresh.
func (b *K3s) MoveServerDB(ctx context.Context, n profiles.Node) error {
	_, err := b.run(ctx, n, k3s.MoveServerDBScript)
	return err
}

// UploadSnapshot copies a local snapshot into the server's snapshot
// directory and returns it as the server has it.
func (b *K3s) UploadSnapshot(ctx context.Context, on profiles.Node, local string) (facts.Snapshot, error) {
	data, err := os.ReadFile(local)
	if err != nil {
		return facts.Snapshot{}, err
	}
	h, err := b.Hosts.Host(ctx, on)
	if err != nil {
		return facts.Snapshot{}, err
	}
	remotePath := k3s.SnapshotDir + "/" + filepath.Base(local)
	if err := h.Upload(ctx, remotePath, data, 0o600, true); err != nil {
		return facts.Snapshot{}, err
	}
	return facts.Snapshot{Name: filepath.Base(local), Node: on.Name, Path: remotePath, Size: int64(len(data))}, nil
}

// ListSnapshots lists the etcd snapshots on a server.
func (b *K3s) ListSnapshots(ctx context.Context, on profiles.Node) ([]facts.Snapshot, error) {
	out, err := b.run(ctx, on, k3s.SnapshotListScript)
	if err != nil {
		return nil, err
	}
	snaps := k3s.ParseSnapshotList(out)
	for i := range snaps {
		snaps[i].Node = on.Name
	}
	return snaps, nil
}

// DeleteSnapshot deletes one on a server (K3s's etcd-snapshot delete).
func (b *K3s) DeleteSnapshot(ctx context.Context, on profiles.Node, name string) error {
	_, err := b.run(ctx, on, "k3s etcd-snapshot delete "+k3s.ShellQuote(name))
	return err
}

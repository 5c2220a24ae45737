// Package k3d creates, observes and deletes a profile's k3d cluster with
// the k3d library (v5.8.3), on the local Docker or the Docker host the
// profile names (DOCKER_HOST=ssh://… goes through docker's connection
// helper, which runs the local ssh client).
package k3d

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	dockerclient "github.com/docker/docker/client"
	k3dclient "github.com/k3d-io/k3d/v5/pkg/client"
	"github.com/k3d-io/k3d/v5/pkg/config"
	configtypes "github.com/k3d-io/k3d/v5/pkg/config/types"
	conf "github.com/k3d-io/k3d/v5/pkg/config/v1alpha5"
	k3dlog "github.com/k3d-io/k3d/v5/pkg/logger"
	"github.com/k3d-io/k3d/v5/pkg/runtimes"
	k3ddocker "github.com/k3d-io/k3d/v5/pkg/runtimes/docker"
	k3dtypes "github.com/k3d-io/k3d/v5/pkg/types"
	k3dversion "github.com/k3d-io/k3d/v5/version"
	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/clientcmd/api"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/kube"
	"github.com/labctl/labctl/provision/kubeconfig"
)

// Version is the k3d library labctl is built with (go.mod); k3d names its
// helper images (k3d-proxy, k3d-tools) after it.
const Version = "v5.8.3"

var setup sync.Once

// quiet sets k3d's version and keeps its logger to warnings: progress is
// labctl's event log.
func quiet() {
	setup.Do(func() {
		k3dversion.Version = Version
		k3dlog.Log().SetLevel(logrus.WarnLevel)
		k3dlog.Log().SetOutput(io.Discard)
	})
}

// Backend is the flow's k3d provider for one profile.
type Backend struct {
	Spec       *profiles.Spec
	Profile    string
	Kubeconfig string
	// WaitTimeout bounds WaitNodes (default 5 minutes).
	WaitTimeout time.Duration
}

// SimpleConfig is the profile's cluster as k3d's own config file would
// give it.
func SimpleConfig(s *profiles.Spec) conf.SimpleConfig {
	k := s.K3d
	hostIP := "0.0.0.0"
	if ip := net.ParseIP(k.APIHost); ip != nil && ip.IsLoopback() {
		hostIP = k.APIHost
	}
	c := conf.SimpleConfig{
		TypeMeta:   configtypes.TypeMeta{APIVersion: conf.ApiVersion, Kind: "Simple"},
		ObjectMeta: configtypes.ObjectMeta{Name: k.ClusterName},
		Servers:    k.Servers,
		Agents:     k.Agents,
		Image:      k.Image,
		ExposeAPI:  conf.SimpleExposureOpts{Host: k.APIHost, HostIP: hostIP, HostPort: strconv.Itoa(k.APIPort)},
		Options: conf.SimpleConfigOptions{
			K3dOptions:        conf.SimpleConfigOptionsK3d{Wait: true, Timeout: 5 * time.Minute},
			KubeconfigOptions: conf.SimpleConfigOptionsKubeconfig{UpdateDefaultKubeconfig: false},
		},
	}
	for _, p := range k.Ports {
		c.Ports = append(c.Ports, conf.PortWithNodeFilters{
			Port:        fmt.Sprintf("%s:%d:%d", hostIP, p.HostPort, p.ContainerPort),
			NodeFilters: []string{p.NodeFilter},
		})
	}
	for _, d := range s.K3s.Disable {
		c.Options.K3sOptions.ExtraArgs = append(c.Options.K3sOptions.ExtraArgs, conf.K3sArgWithNodeFilters{Arg: "--disable=" + d, NodeFilters: []string{"server:*"}})
	}
	if s.K3s.ClusterCIDR != "" {
		c.Options.K3sOptions.ExtraArgs = append(c.Options.K3sOptions.ExtraArgs,
			conf.K3sArgWithNodeFilters{Arg: "--cluster-cidr=" + s.K3s.ClusterCIDR, NodeFilters: []string{"server:*"}},
			conf.K3sArgWithNodeFilters{Arg: "--service-cidr=" + s.K3s.ServiceCIDR, NodeFilters: []string{"server:*"}})
	}
	c.Options.K3sOptions.ExtraArgs = append(c.Options.K3sOptions.ExtraArgs, passthrough(s.K3s.Config, "server:*")...)
	c.Options.K3sOptions.ExtraArgs = append(c.Options.K3sOptions.ExtraArgs, passthrough(s.K3s.AgentConfig, "agent:*")...)
	for _, name := range slices.Sorted(maps.Keys(k.Env)) {
		c.Env = append(c.Env, conf.EnvVarWithNodeFilters{EnvVar: name + "=" + k.Env[name], NodeFilters: []string{"server:*", "agent:*"}})
	}
	return c
}

// passthrough is the profile's extra K3s options as k3d's --k3s-arg:
// --name for true, --name=value once per value of a list, sorted by name.
func passthrough(cfg profiles.K3sConfig, filter string) []conf.K3sArgWithNodeFilters {
	var out []conf.K3sArgWithNodeFilters
	for _, k := range slices.Sorted(maps.Keys(cfg)) {
		vals, ok := cfg[k].([]any)
		if !ok {
			vals = []any{cfg[k]}
		}
		for _, v := range vals {
			arg := "--" + k
			if b, isBool := v.(bool); !isBool || !b {
				arg += "=" + fmt.Sprint(v)
			}
			out = append(out, conf.K3sArgWithNodeFilters{Arg: arg, NodeFilters: []string{filter}})
		}
	}
	return out
}

// withDocker runs fn with DOCKER_HOST, or DOCKER_CONTEXT, set to the
// profile's Docker host or context: k3d's Docker runtime initialises the
// Docker CLI, which takes them from there (DOCKER_HOST wins over a
// context, so it is cleared for one).
var dockerEnv sync.Mutex

func (b *Backend) withDocker(fn func() error) error {
	return b.withDockerEnv(nil, fn)
}

// withDockerEnv is withDocker with more variables set for fn.
func (b *Backend) withDockerEnv(extra map[string]string, fn func() error) error {
	quiet()
	dockerEnv.Lock()
	defer dockerEnv.Unlock()
	set := map[string]string{}
	for k, v := range extra {
		set[k] = v
	}
	switch k := b.Spec.K3d; {
	case strings.HasPrefix(k.DockerHost, "ssh://"):
		dir, cleanup, err := sshShim(b.Spec)
		if err != nil {
			return err
		}
		defer cleanup()
		set["DOCKER_HOST"], set["PATH"] = k.DockerHost, dir+string(os.PathListSeparator)+os.Getenv("PATH")
		inner := fn
		fn = func() error {
			err := inner()
			if err != nil && isConnectError(err) {
				if p := sshHostProblem(k.DockerHost, err.Error()); p != "" {
					return fmt.Errorf("%w: %s", ErrDockerHost, p)
				}
				if p := diagnoseSSHHost(dir, k.DockerHost); p != "" {
					return fmt.Errorf("%w: %s", ErrDockerHost, p)
				}
			}
			return err
		}
	case k.DockerHost != "":
		set["DOCKER_HOST"] = k.DockerHost
	case k.DockerContext != "":
		set["DOCKER_CONTEXT"], set["DOCKER_HOST"] = k.DockerContext, ""
	}
	for name, v := range set {
		old, had := os.LookupEnv(name)
		var err error
		if v == "" {
			err = os.Unsetenv(name)
		} else {
			err = os.Setenv(name, v)
		}
		if err != nil {
			return err
		}
		defer func() {
			if had {
				_ = os.Setenv(name, old)
			} else {
				_ = os.Unsetenv(name)
			}
		}()
	}
	return b.unreachable(fn())
}

// isConnectError: the Docker client could not talk to its daemon.
func isConnectError(err error) bool {
	msg := err.Error()
	return dockerclient.IsErrConnectionFailed(err) || strings.Contains(msg, "Cannot connect to the Docker daemon") || strings.Contains(msg, "error during connect")
}

// ErrDockerUnreachable says the profile's Docker did not answer.
var ErrDockerUnreachable = errors.New("Docker is not reachable") //nolint:staticcheck // a name, capitalised

// unreachable turns the Docker client's long "cannot connect" chain
// (k3d wraps it several times over) into one line that says where labctl
// looked and what to do.
func (b *Backend) unreachable(err error) error {
	if err == nil {
		return nil
	}
	if !isConnectError(err) {
		return err
	}
	where, fix := "the local Docker ("+dockerclient.DefaultDockerHost+")", "start Docker, or set spec.k3d.dockerHost or spec.k3d.dockerContext to where it runs"
	switch k := b.Spec.K3d; {
	case k.DockerHost != "":
		where, fix = k.DockerHost, "check that the host is up, that Docker runs there and that this user may use it"
	case k.DockerContext != "":
		where, fix = "Docker context "+k.DockerContext, "check the context (docker context inspect "+k.DockerContext+") and that its Docker runs"
	}
	if h := os.Getenv("DOCKER_HOST"); h != "" && b.Spec.K3d.DockerHost == "" && b.Spec.K3d.DockerContext == "" {
		where = h + " (DOCKER_HOST)"
	}
	return fmt.Errorf("%w at %s: %s", ErrDockerUnreachable, where, fix)
}

func (b *Backend) clusterConfig(ctx context.Context) (*conf.ClusterConfig, error) {
	cc, err := config.TransformSimpleToClusterConfig(ctx, runtimes.Docker, SimpleConfig(b.Spec), "")
	if err != nil {
		return nil, fmt.Errorf("k3d config: %w", err)
	}
	if cc, err = config.ProcessClusterConfig(*cc); err != nil {
		return nil, fmt.Errorf("k3d config: %w", err)
	}
	if err := config.ValidateClusterConfig(ctx, runtimes.Docker, *cc); err != nil {
		return nil, fmt.Errorf("k3d config: %w", err)
	}
	return cc, nil
}

// Shape is what labctl compares between a profile and a running cluster.
type Shape struct {
	Servers, Agents int
	Image           string
	Ports           []string // "hostPort:containerPort" on the load balancer, sorted
}

func (s Shape) String() string {
	return fmt.Sprintf("%d server(s) + %d agent(s), image %s, ports %s", s.Servers, s.Agents, s.Image, strings.Join(s.Ports, " "))
}

// Want is the profile's shape.
func Want(s *profiles.Spec) Shape {
	k := s.K3d
	w := Shape{Servers: k.Servers, Agents: k.Agents, Image: normImage(k.Image)}
	for _, p := range k.Ports {
		if p.NodeFilter == "loadbalancer" {
			w.Ports = append(w.Ports, fmt.Sprintf("%d:%d", p.HostPort, p.ContainerPort))
		}
	}
	w.Ports = append(w.Ports, fmt.Sprintf("%d:6443", k.APIPort))
	sort.Strings(w.Ports)
	return w
}

func normImage(s string) string { return strings.TrimPrefix(s, "docker.io/") }

// ErrShape says a cluster of that name exists with another shape.
var ErrShape = errors.New("exists with a different shape")

// Observe reports whether the cluster exists, and its shape; one of
// another shape is an ErrShape error naming both shapes (labctl never
// reshapes a cluster).
func (b *Backend) Observe(ctx context.Context) (facts.K3dCluster, error) {
	exists, err := b.exists(ctx)
	c := facts.K3dCluster{Exists: exists}
	if exists && err == nil {
		c.Shape = Want(b.Spec).String()
	}
	return c, err
}

func (b *Backend) exists(ctx context.Context) (bool, error) {
	var got *k3dtypes.Cluster
	err := b.withDocker(func() error {
		// k3d's ClusterGet reports an unreachable Docker as "no nodes
		// found": ask Docker itself first.
		if _, err := runtimes.Docker.Info(); err != nil {
			return err
		}
		var err error
		got, err = k3dclient.ClusterGet(ctx, runtimes.Docker, &k3dtypes.Cluster{Name: b.Spec.K3d.ClusterName})
		return err
	})
	if errors.Is(err, k3dclient.ClusterGetNoNodesFoundError) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("k3d cluster %s: %w", b.Spec.K3d.ClusterName, err)
	}
	have := Shape{}
	for _, n := range got.Nodes {
		switch n.Role {
		case k3dtypes.ServerRole:
			have.Servers++
			have.Image = normImage(n.Image)
		case k3dtypes.AgentRole:
			have.Agents++
		case k3dtypes.LoadBalancerRole:
			for port, binds := range n.Ports {
				for _, bd := range binds {
					have.Ports = append(have.Ports, bd.HostPort+":"+port.Port())
				}
			}
		}
	}
	sort.Strings(have.Ports)
	want := Want(b.Spec)
	if have.Image != want.Image {
		// Docker lists a container's image by ID when its name now
		// resolves to another image or cannot be shown: compare IDs.
		same, err := b.sameImage(ctx, have.Image, want.Image)
		if err != nil {
			return true, fmt.Errorf("k3d cluster %s: %w", b.Spec.K3d.ClusterName, err)
		}
		if same {
			have.Image = want.Image
		}
	}
	if have.String() != want.String() {
		return true, fmt.Errorf("k3d cluster %s %w: it has %s; the profile wants %s (delete it first: labctl does not reshape clusters)", b.Spec.K3d.ClusterName, ErrShape, have, want)
	}
	if d := settingsDrift(b.Spec, got.Nodes); len(d) > 0 {
		return true, fmt.Errorf("k3d cluster %s %w: %s (k3d fixes a node's K3s arguments and environment when it creates the cluster: delete it with labctl destroy and create it again, or revert the profile to what runs)", b.Spec.K3d.ClusterName, ErrSettings, strings.Join(d, "; "))
	}
	return true, nil
}

// ErrSettings says a cluster of that name exists, of the profile's shape,
// but created with other K3s arguments or environment than the profile's.
var ErrSettings = errors.New("was created with other settings than the profile's")

// settingsDrift lists what the server and agent containers lack of the
// K3s arguments and environment the profile gives them (SimpleConfig's,
// by node filter). An environment variable is named, never its value: a
// proxy URL can hold a password. What k3d adds of its own is not compared.
func settingsDrift(s *profiles.Spec, nodes []*k3dtypes.Node) []string {
	c := SimpleConfig(s)
	args := map[k3dtypes.Role][]string{}
	env := map[k3dtypes.Role][]string{}
	roles := func(filters []string) []k3dtypes.Role {
		var out []k3dtypes.Role
		for _, f := range filters {
			role, _, _ := strings.Cut(f, ":")
			out = append(out, k3dtypes.Role(role))
		}
		return out
	}
	for _, a := range c.Options.K3sOptions.ExtraArgs {
		for _, r := range roles(a.NodeFilters) {
			args[r] = append(args[r], a.Arg)
		}
	}
	for _, e := range c.Env {
		for _, r := range roles(e.NodeFilters) {
			env[r] = append(env[r], e.EnvVar)
		}
	}
	var out []string
	for _, n := range nodes {
		if n.Role != k3dtypes.ServerRole && n.Role != k3dtypes.AgentRole {
			continue
		}
		var missing []string
		for _, a := range args[n.Role] {
			if !slices.Contains(n.Cmd, a) && !slices.Contains(n.Args, a) {
				missing = append(missing, "K3s argument "+a)
			}
		}
		for _, e := range env[n.Role] {
			if slices.Contains(n.Env, e) {
				continue
			}
			name, _, _ := strings.Cut(e, "=")
			what := "unset"
			if slices.ContainsFunc(n.Env, func(v string) bool { return strings.HasPrefix(v, name+"=") }) {
				what = "another value"
			}
			missing = append(missing, fmt.Sprintf("env %s (%s)", name, what))
		}
		if len(missing) > 0 {
			out = append(out, fmt.Sprintf("%s lacks %s", n.Name, strings.Join(missing, ", ")))
		}
	}
	sort.Strings(out) // Docker lists containers in no set order
	return out
}

// CreateCluster runs k3d's cluster create (containers, network, load
// balancer; it waits for the nodes' ready log lines). k3d v5.8.3 writes
// a temporary k3d-hostsfile-* per node and never removes it
// (pkg/client/hooks.go), so the create gets a temporary directory of its
// own (TMPDIR), emptied of k3d's files and removed afterwards: nothing is
// left in the operator's /tmp. TMPDIR is the process's: what another
// goroutine made there meanwhile is left alone, and the directory with it.
func (b *Backend) CreateCluster(ctx context.Context) error {
	tmp, err := os.MkdirTemp("", "labctl-k3d-")
	if err != nil {
		return err
	}
	defer func() {
		left, _ := filepath.Glob(filepath.Join(tmp, "k3d-*"))
		for _, f := range left {
			_ = os.Remove(f)
		}
		_ = os.Remove(tmp)
	}()
	return b.withDockerEnv(map[string]string{"TMPDIR": tmp}, func() error {
		cc, err := b.clusterConfig(ctx)
		if err != nil {
			return err
		}
		if err := k3dclient.ClusterRun(ctx, runtimes.Docker, cc); err != nil {
			return fmt.Errorf("k3d cluster %s: %w", cc.Name, err)
		}
		return nil
	})
}

// Delete removes the cluster (containers, network, volumes); a missing
// cluster is not an error.
func (b *Backend) Delete(ctx context.Context) error {
	return b.withDocker(func() error {
		c, err := k3dclient.ClusterGet(ctx, runtimes.Docker, &k3dtypes.Cluster{Name: b.Spec.K3d.ClusterName})
		if errors.Is(err, k3dclient.ClusterGetNoNodesFoundError) {
			return nil
		}
		if err != nil {
			return err
		}
		return k3dclient.ClusterDelete(ctx, runtimes.Docker, c, k3dtypes.ClusterDeleteOpts{})
	})
}

// config is the cluster's kubeconfig renamed to the profile, its server
// the profile's API host and port.
func (b *Backend) config(ctx context.Context) (*api.Config, error) {
	var kc *api.Config
	err := b.withDocker(func() error {
		var err error
		kc, err = k3dclient.KubeconfigGet(ctx, runtimes.Docker, &k3dtypes.Cluster{Name: b.Spec.K3d.ClusterName})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("k3d cluster %s: kubeconfig: %w", b.Spec.K3d.ClusterName, err)
	}
	raw, err := clientcmd.Write(*kc)
	if err != nil {
		return nil, err
	}
	return kubeconfig.Rename(raw, b.Profile, fmt.Sprintf("https://%s", net.JoinHostPort(b.Spec.K3d.APIHost, strconv.Itoa(b.Spec.K3d.APIPort))))
}

// WriteKubeconfig merges the cluster's context into the kubeconfig file.
func (b *Backend) WriteKubeconfig(ctx context.Context) error {
	cfg, err := b.config(ctx)
	if err != nil {
		return err
	}
	_, err = kubeconfig.Merge(b.Kubeconfig, cfg, false)
	return err
}

// KubeconfigCurrent reports whether the merge would change nothing.
func (b *Backend) KubeconfigCurrent(ctx context.Context) (facts.Kubeconfig, error) {
	cfg, err := b.config(ctx)
	if err != nil {
		return facts.Kubeconfig{}, err
	}
	ok, err := kubeconfig.Current(b.Kubeconfig, cfg, false)
	return facts.Kubeconfig{Current: ok, Server: fmt.Sprintf("https://%s", net.JoinHostPort(b.Spec.K3d.APIHost, strconv.Itoa(b.Spec.K3d.APIPort)))}, err
}

// RemoveContext removes the profile's context from the kubeconfig.
func (b *Backend) RemoveContext(context.Context) (bool, error) {
	return kubeconfig.Remove(b.Kubeconfig, b.Profile)
}

// HasContext reports whether the kubeconfig holds the profile's context.
func (b *Backend) HasContext(context.Context) (bool, error) {
	return kubeconfig.Has(b.Kubeconfig, b.Profile)
}

// WaitNodes waits until every node of the profile is Ready, asking the
// API through the profile's address.
func (b *Backend) WaitNodes(ctx context.Context) error {
	cfg, err := b.config(ctx)
	if err != nil {
		return err
	}
	rc, err := clientcmd.NewDefaultClientConfig(*cfg, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	want := b.Spec.K3d.Servers + b.Spec.K3d.Agents
	timeout := b.WaitTimeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	deadline := time.Now().Add(timeout)
	for {
		ready, notReady, err := readyNodes(ctx, cs)
		if err == nil && ready == want {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("k3d cluster %s: nodes not Ready after %s: %w", b.Spec.K3d.ClusterName, timeout, err)
			}
			return fmt.Errorf("k3d cluster %s: %d of %d nodes Ready after %s (not Ready: %s)", b.Spec.K3d.ClusterName, ready, want, timeout, strings.Join(notReady, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

func readyNodes(ctx context.Context, cs kubernetes.Interface) (int, []string, error) {
	list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, nil, err
	}
	ready := 0
	var not []string
	for _, n := range list.Items {
		ok := false
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ok = true
			}
		}
		if ok {
			ready++
		} else {
			not = append(not, n.Name)
		}
	}
	return ready, not, nil
}

// sameImage reports whether two image references name the same image on
// the cluster's Docker.
func (b *Backend) sameImage(ctx context.Context, a, c string) (bool, error) {
	var same bool
	err := b.withDocker(func() error {
		// k3d's own client: it honours ssh:// hosts and Docker contexts.
		cli, err := k3ddocker.GetDockerClient()
		if err != nil {
			return err
		}
		defer func() { _ = cli.Close() }()
		id := func(ref string) string {
			img, _, err := cli.ImageInspectWithRaw(ctx, ref)
			if err != nil {
				return ""
			}
			return img.ID
		}
		ia, ic := id(a), id(c)
		same = ia != "" && ia == ic
		return nil
	})
	return same, err
}

// Nodes lists the cluster's k3d nodes (servers and agents; the load
// balancer and tools containers aside), with whether their Nodes are
// Ready.
func (b *Backend) Nodes(ctx context.Context) ([]facts.K3dNode, error) {
	var got *k3dtypes.Cluster
	err := b.withDocker(func() error {
		if _, err := runtimes.Docker.Info(); err != nil {
			return err
		}
		var err error
		got, err = k3dclient.ClusterGet(ctx, runtimes.Docker, &k3dtypes.Cluster{Name: b.Spec.K3d.ClusterName})
		return err
	})
	if errors.Is(err, k3dclient.ClusterGetNoNodesFoundError) {
		return nil, fmt.Errorf("k3d cluster %s does not exist", b.Spec.K3d.ClusterName)
	}
	if err != nil {
		return nil, fmt.Errorf("k3d cluster %s: %w", b.Spec.K3d.ClusterName, err)
	}
	ready := map[string]facts.KubeNode{}
	if c, err := b.api(ctx); err == nil {
		if ns, err := c.Nodes(ctx); err == nil {
			for _, n := range ns {
				ready[n.Name] = n
			}
		}
	}
	var out []facts.K3dNode
	for _, n := range got.Nodes {
		if n.Role != k3dtypes.ServerRole && n.Role != k3dtypes.AgentRole {
			continue
		}
		kn, ok := ready[n.Name]
		out = append(out, facts.K3dNode{Name: n.Name, Role: string(n.Role), Running: n.State.Running, Ready: ok && kn.Ready})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// api is the cluster's API through the profile's address.
func (b *Backend) api(ctx context.Context) (*kube.Client, error) {
	cfg, err := b.config(ctx)
	if err != nil {
		return nil, err
	}
	return kube.New(cfg)
}

// DeleteKubeNode deletes the Node object of a k3d node.
func (b *Backend) DeleteKubeNode(ctx context.Context, name string) error {
	c, err := b.api(ctx)
	if err != nil {
		return err
	}
	_, err = c.DeleteNode(ctx, name)
	return err
}

// DeleteNode removes a k3d node's container (and updates the load
// balancer); a missing node is no error.
func (b *Backend) DeleteNode(ctx context.Context, name string) error {
	return b.withDocker(func() error {
		n, err := k3dclient.NodeGet(ctx, runtimes.Docker, &k3dtypes.Node{Name: name})
		if err != nil {
			return nil // gone already
		}
		return k3dclient.NodeDelete(ctx, runtimes.Docker, n, k3dtypes.NodeDeleteOpts{})
	})
}

// AddAgent creates an agent of that name in the cluster, as `k3d node
// create` does (settings copied from an agent of the cluster), and waits
// for its K3s to register.
func (b *Backend) AddAgent(ctx context.Context, name string) error {
	return b.withDocker(func() error {
		n := &k3dtypes.Node{Name: name, Role: k3dtypes.AgentRole, Image: b.Spec.K3d.Image}
		return k3dclient.NodeAddToCluster(ctx, runtimes.Docker, n, &k3dtypes.Cluster{Name: b.Spec.K3d.ClusterName}, k3dtypes.NodeCreateOpts{Wait: true, Timeout: 5 * time.Minute})
	})
}

// WaitNodeReady waits until the Node of that name is Ready.
func (b *Backend) WaitNodeReady(ctx context.Context, name string) error {
	c, err := b.api(ctx)
	if err != nil {
		return err
	}
	timeout := b.WaitTimeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	deadline := time.Now().Add(timeout)
	for {
		ns, err := c.Nodes(ctx)
		if err == nil {
			for _, n := range ns {
				if n.Name == name && n.Ready {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("k3d node %s: Node not Ready after %s", name, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/labctl/labctl/commands"
	"github.com/labctl/labctl/e2e/testbed"
	"github.com/labctl/labctl/flow"
	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/k3s"
	"github.com/labctl/labctl/provision/nodes"
	"github.com/labctl/labctl/provision/prereq"
	"github.com/labctl/labctl/provision/remote"
)

// serveK3s serves the stand-in's install.sh and k3s binary to the bed's
// nodes from the host (the bed network's gateway) over HTTPS with the
// bed's CA, as get.k3s.io and GitHub releases serve the real ones. It
// returns the install script URL.
func serveK3s(t *testing.T, bin string) string {
	t.Helper()
	script, err := testbed.InstallScript()
	if err != nil {
		t.Fatal(err)
	}
	gw := bed.Subnet.Addr().Next().String()
	tc, err := bed.ServerTLS(gw)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", gw+":0", tc)
	if err != nil {
		t.Fatal(err)
	}
	base := "https://" + l.Addr().String()
	body, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	// Point the script's downloads at this server, as the real script
	// points at GitHub releases.
	body = bytes.Replace(body, []byte("set -e\n"), []byte("set -e\nINSTALL_K3S_DOWNLOAD_URL=${INSTALL_K3S_DOWNLOAD_URL:-"+base+"}\n"), 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/install.sh", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(body) })
	mux.HandleFunc("/k3s", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, filepath.Join(bin, "k3s")) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return base + "/install.sh"
}

// k3sNodes starts fresh nodes at ips with the stand-in's bundle, serves
// its install script, and returns a function writing a profile for them
// as user, with extra YAML appended under spec.
func k3sNodes(t *testing.T, ctx context.Context, ips []string) func(user, extra string) string {
	return k3sNodesWithAgents(t, ctx, ips, len(ips))
}

// k3sNodesWithAgents is k3sNodes whose nodes after the first servers are
// agents. The profile's k3s mapping is a block: extra lines indented by
// four spaces add to it, by two to spec.
func k3sNodesWithAgents(t *testing.T, ctx context.Context, ips []string, servers int) func(user, extra string) string {
	t.Helper()
	bin, err := testbed.BuildKube(ctx, testbed.CacheDir(), func(f string, a ...any) { t.Logf(f, a...) })
	if err != nil {
		t.Fatal(err)
	}
	for i, ip := range ips {
		name := fmt.Sprintf("node-%d", i+1)
		if _, err := bed.StartNode(ctx, name, ip); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = bed.RemoveNode(context.Background(), name) })
		if err := bed.InstallBundle(ctx, name, bin); err != nil {
			t.Fatal(err)
		}
	}
	url := serveK3s(t, bin)
	return func(user, extra string) string {
		f := e2eProfileRoles(t, ips, user, servers)
		text, _ := os.ReadFile(f)
		text = append(text, []byte("  k3s:\n    version: v1.34.4+k3s1\n    installScriptURL: "+url+"\n"+extra)...)
		if err := os.WriteFile(f, text, 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
}

// readyServers lists, sorted, the Nodes that are Ready with K3s's etcd
// and control-plane role labels.
func readyServers(t *testing.T, ctx context.Context, cs *kubernetes.Clientset) []string {
	t.Helper()
	nl, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ready []string
	for _, n := range nl.Items {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && n.Labels["node-role.kubernetes.io/etcd"] == "true" && n.Labels["node-role.kubernetes.io/control-plane"] == "true" {
				ready = append(ready, n.Name)
			}
		}
	}
	sort.Strings(ready)
	return ready
}

// homelabK3s is the k3s settings of a real homelab profile, under spec.k3s.
const homelabK3s = `    etcdMount: ` + testbed.EtcdDisk + `
    config:
      disable-helm-controller: true
      kubelet-arg: [max-pods=150]
`

// homelabSettingsInPlace checks homelabK3s and production's tuning on
// the nodes: config.yaml carries the passthrough and the kubelet obeys
// it; etcd's data is on its disk, recorded in fstab, K3s waits for it;
// the inotify limits are live and persisted; the journal is on disk.
func homelabSettingsInPlace(t *testing.T, ctx context.Context, cs *kubernetes.Clientset, names []string) {
	t.Helper()
	for _, n := range names {
		cfg, _ := bed.Exec(ctx, n, "cat", k3s.ConfigPath)
		if !strings.Contains(cfg, "disable-helm-controller: true\n") || !strings.Contains(cfg+"\n", "kubelet-arg:\n    - max-pods=150\n") {
			t.Errorf("%s: config.yaml lacks the passthrough:\n%s", n, cfg)
		}
		node, err := cs.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if err != nil || node.Status.Capacity.Pods().Value() != 150 {
			t.Errorf("%s: the kubelet's pod capacity is not max-pods=150: %v %v", n, node.Status.Capacity.Pods(), err)
		}
		got, err := bed.Exec(ctx, n, "sh", "-c", `findmnt -n -o SOURCE,FSTYPE -T `+k3s.DBDir+`/etcd | tr -s ' '; test -d `+testbed.EtcdDisk+`/k3s-db/etcd/member && echo member-on-disk
grep -c ' `+k3s.DBDir+` none bind' /etc/fstab; grep -h RequiresMountsFor /etc/systemd/system/k3s.service.d/*.conf
cat /proc/sys/fs/inotify/max_user_watches; grep -c '^fs.inotify' `+prereq.SysctlFile+`; ls /var/log/journal/*/system.journal | wc -l`)
		want := "tmpfs[/k3s-db] tmpfs\nmember-on-disk\n1\nRequiresMountsFor=" + k3s.DBDir + "\n524288\n2\n1"
		if err != nil || got != want {
			t.Errorf("%s: etcd disk, sysctl and journald:\n got %q\nwant %q (%v)", n, got, want, err)
		}
	}
	t.Logf("%s: config.yaml passthrough, max-pods 150, etcd on %s (fstab, K3s waits for it), inotify 524288 persisted, journal on disk", strings.Join(names, ","), testbed.EtcdDisk)
}

// clusterFlowFormsThreeServersAndSecondRunChangesNothing runs labctl's
// real flow (prerequisites → inspect → cluster-init → joins one at a time
// → kubeconfig) over SSH on three fresh bed nodes, installing the K3s
// stand-in through its install script. Then the API answers from the host
// through the merged kubeconfig, every server is a started etcd member,
// and a second run makes no change.
func clusterFlowFormsThreeServersAndSecondRunChangesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	// The profile a real homelab writes: production's tuning (inotify,
	// journald), Flux owning Helm, a kubelet setting, etcd on its disk.
	file := k3sNodes(t, ctx, []string{"172.30.20.51", "172.30.20.52", "172.30.20.53"})("root", homelabK3s)
	l, err := profiles.Loader{}.LoadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	token, _, err := k3s.ClusterToken(state, l.Metadata.Name, nil, os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(t.TempDir(), "kubeconfig")

	run := func(name string) *plan.Report {
		pool := remote.NewPool(nil)
		defer pool.Close()
		hosts := &nodes.Backend{Pool: pool, SSH: l.Spec.SSH, Spec: &l.Spec}
		tok := &nodes.Token{Dir: state, Profile: l.Metadata.Name, Redact: pool.Redact}
		kb := &nodes.K3s{Hosts: hosts, Spec: &l.Spec, Profile: l.Metadata.Name, Token: tok, Kubeconfig: kc}
		p, err := flow.Cluster(&l.Profile, flow.Backends{Hosts: hosts, K3s: kb}, flow.Options{Kubeconfig: kc})
		if err != nil {
			t.Fatal(err)
		}
		var progress bytes.Buffer
		rep, err := plan.Run(ctx, p, plan.Options{Sink: plan.NewProgress(&progress)})
		t.Logf("%s run: %d changes, wall %s, critical path %s\n%s", name, rep.Changes(), rep.Wall().Round(time.Millisecond), rep.CriticalPath().Round(time.Millisecond), progress.String())
		if err != nil {
			t.Fatal(err)
		}
		for h, n := range pool.Connections() {
			if n != 1 {
				t.Errorf("%s: %d SSH connections, want 1", h, n)
			}
		}
		t.Logf("%s run: remote commands per host: %v", name, pool.Commands())
		if strings.Contains(progress.String(), token.Reveal()) {
			t.Error("the cluster token reached the progress output")
		}
		return rep
	}

	first := run("first")
	if first.Changes() == 0 {
		t.Fatal("first run changed nothing")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://172.30.20.51:6443" {
		t.Errorf("kubeconfig server %s", cfg.Host)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil || string(body) != "ok" {
		t.Fatalf("API from the host through the merged kubeconfig: %q %v", body, err)
	}
	// The flow waited for each server's Node to be Ready: all three are,
	// seen from the host, with K3s's role labels.
	if ready := readyServers(t, ctx, cs); strings.Join(ready, ",") != "node-1,node-2,node-3" {
		t.Errorf("Ready etcd/control-plane nodes from the host: %v", ready)
	}
	for _, n := range []string{"node-1", "node-2", "node-3"} {
		out, err := bed.Exec(ctx, n, "sh", "-c", "systemctl is-active k3s; curl -sS --cacert /var/lib/rancher/k3s/server/tls/etcd/server-ca.crt --cert /var/lib/rancher/k3s/server/tls/etcd/client.crt --key /var/lib/rancher/k3s/server/tls/etcd/client.key -X POST https://127.0.0.1:2379/v3/cluster/member/list -d '{}' | grep -o '\"name\":\"node-[0-9]-' | sort | tr -d '\\n'")
		if err != nil || out != "active\n\"name\":\"node-1-\"name\":\"node-2-\"name\":\"node-3-" {
			t.Errorf("%s: k3s and etcd members: %q %v", n, out, err)
		}
	}
	cfgYAML, _ := bed.Exec(ctx, "node-2", "cat", k3s.ConfigPath)
	if strings.Contains(cfgYAML, "cluster-init") || !strings.Contains(cfgYAML, "server: https://172.30.20.51:6443") {
		t.Errorf("node-2 config.yaml:\n%s", cfgYAML)
	}
	homelabSettingsInPlace(t, ctx, cs, []string{"node-1", "node-2", "node-3"})

	second := run("second")
	if second.Changes() != 0 {
		t.Fatalf("second run made %d changes", second.Changes())
	}

	// Drift: the profile asks another K3s version, then an extra tls-san.
	// plan --observe names it on every node, create stops naming it, and
	// nothing on the hosts changes.
	text, _ := os.ReadFile(file)
	newer := writeVariant(t, file, strings.Replace(string(text), "version: v1.34.4+k3s1", "version: v1.34.5+k3s1", 1))
	withSAN := writeVariant(t, file, string(text)+"  dns:\n    domain: lab.test\n    records:\n      - {name: api.lab.test, targets: [172.30.20.51]}\n")
	before := nodeState(t, ctx, []string{"node-1", "node-2", "node-3"})
	for _, v := range []struct{ name, file, line string }{
		{"k3s version", newer, "k3s v1.34.4+k3s1 installed, profile wants v1.34.5+k3s1"},
		{"tls-san", withSAN, "config.yaml tls-san [172.30.20.51,172.30.20.52,172.30.20.53] → [172.30.20.51,172.30.20.52,172.30.20.53,api.lab.test]"},
	} {
		var out bytes.Buffer
		start := time.Now()
		err := commands.Plan(ctx, commands.Env{Stdout: &out, Stderr: &out, Output: commands.OutputText}, commands.ProfileArg{File: v.file}, commands.PlanOptions{Observe: true, Kubeconfig: kc, StateDir: state})
		t.Logf("plan --observe with a changed %s (%s):\n%s", v.name, time.Since(start).Round(time.Millisecond), out.String())
		for _, n := range []string{"node-1", "node-2", "node-3"} {
			if !strings.Contains(out.String(), "drift on "+n+": "+v.line) {
				t.Errorf("plan --observe does not show %s's %s drift", n, v.name)
			}
		}
		var d *flow.DriftError
		if !errors.As(err, &d) {
			t.Errorf("plan --observe: %v", err)
		}
		out.Reset()
		err = commands.Create(ctx, commands.Env{Stdout: &out, Stderr: &out, Output: commands.OutputText}, commands.ProfileArg{File: v.file}, commands.CreateOptions{NoFlux: true, StateDir: state, Kubeconfig: kc})
		if !errors.As(err, &d) || len(d.Nodes) != 3 || !strings.Contains(err.Error(), "node-2: "+v.line) || !strings.Contains(err.Error(), "roll the change out one node at a time with labctl upgrade") {
			t.Errorf("create with a changed %s: %v\n%s", v.name, err, out.String())
		}
		if strings.Contains(out.String(), "already done") && strings.Contains(out.String(), "Join K3s server: already done") {
			t.Errorf("create marked a drifted K3s in place:\n%s", out.String())
		}
	}
	if after := nodeState(t, ctx, []string{"node-1", "node-2", "node-3"}); after != before {
		t.Errorf("a refused create changed the hosts:\nbefore %s\nafter  %s", before, after)
	}

	// Destroy of the given hosts: plan, confirmation, K3s gone from every
	// node with the prerequisites kept, the context removed; a create
	// afterwards forms a fresh cluster.
	oldCluster := clusterCA(t, ctx, "node-1")
	var dout bytes.Buffer
	start := time.Now()
	err = commands.Destroy(ctx, commands.Env{Stdout: &dout, Stderr: &dout, Output: commands.OutputText}, commands.ProfileArg{File: file},
		commands.DestroyOptions{Confirm: strings.NewReader("production-e2e\n"), Kubeconfig: kc})
	t.Logf("destroy of the given hosts (%s):\n%s", time.Since(start).Round(time.Millisecond), dout.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Plan destroy production-e2e", "+ run k3s-uninstall.sh", `Type "production-e2e" to confirm`, "Uninstall K3s: done", "Remove kubeconfig context: done"} {
		if !strings.Contains(dout.String(), want) {
			t.Errorf("destroy output lacks %q", want)
		}
	}
	for _, n := range []string{"node-1", "node-2", "node-3"} {
		got, err := bed.Exec(ctx, n, "sh", "-c", "test -e /usr/local/bin/k3s && echo k3s; test -e /var/lib/rancher/k3s && echo data; systemctl is-active k3s; dpkg-query -W -f '${Status}\n' open-iscsi; test -d /var/lib/longhorn && echo data-path")
		if got != "inactive\ninstall ok installed\ndata-path" {
			t.Errorf("%s after destroy: %q %v", n, got, err)
		}
	}
	// etcd's disk is wiped with K3s; its fstab line stays, like the
	// other prerequisites.
	for _, n := range []string{"node-1", "node-2", "node-3"} {
		got, err := bed.Exec(ctx, n, "sh", "-c", "ls -A "+testbed.EtcdDisk+"/k3s-db | wc -l; grep -c ' "+k3s.DBDir+" none bind' /etc/fstab; findmnt -n "+k3s.DBDir+" || echo not-mounted")
		if got != "0\n1\nnot-mounted" {
			t.Errorf("%s: etcd disk after destroy: %q %v", n, got, err)
		}
	}
	if has, _ := kubeconfigHas(kc, "production-e2e"); has {
		t.Error("context production-e2e left in the kubeconfig")
	}
	third := run("after destroy")
	if third.Changes() == 0 {
		t.Fatal("create after destroy changed nothing")
	}
	// A new cluster has a new CA (etcd's cluster id derives from the first
	// member's peer URL, so it is the same for a cluster begun anew there).
	if ca := clusterCA(t, ctx, "node-1"); ca == oldCluster || len(ca) != 64 {
		t.Errorf("the cluster CA after destroy and create is %q, the old one was %q", ca, oldCluster)
	}

	// Rebuild of a given host: node-3's machine is reinstalled (a fresh
	// node container at the same address, with a new host key). Refused
	// until the operator says so with --replace-host-key, then rebuilt.
	bin, err := testbed.BuildKube(ctx, testbed.CacheDir(), func(f string, a ...any) { t.Logf(f, a...) })
	if err != nil {
		t.Fatal(err)
	}
	if err := bed.RemoveNode(ctx, "node-3"); err != nil {
		t.Fatal(err)
	}
	if _, err := bed.StartNode(ctx, "node-3", "172.30.20.53"); err != nil {
		t.Fatal(err)
	}
	if err := bed.InstallBundle(ctx, "node-3", bin); err != nil {
		t.Fatal(err)
	}
	rebuild := func(replace bool) (string, []plan.Event, error) {
		var out bytes.Buffer
		rec := &plan.Recorder{}
		e := commands.Env{Stdout: &out, Stderr: &out, Output: commands.OutputText, Now: time.Now, Events: rec}
		start := time.Now()
		err := commands.Rebuild(ctx, e, commands.ProfileArg{File: file}, commands.RebuildOptions{Node: "node-3", ReplaceHostKey: replace, StateDir: state, Kubeconfig: kc})
		t.Logf("rebuild node-3 (replace host key %v, %s): %v\n%s", replace, time.Since(start).Round(time.Millisecond), err, out.String())
		return out.String(), rec.Events(), err
	}
	_, events, err := rebuild(false)
	if !errors.Is(err, remote.ErrHostKeyMismatch) || !strings.Contains(err.Error(), "--replace-host-key") {
		t.Fatalf("a reinstalled host with a new key: %v", err)
	}
	if c := changesOn(events); len(c) != 0 {
		t.Errorf("the refused rebuild changed %v", c)
	}
	rout, _, err := rebuild(true)
	if err != nil {
		t.Fatal(err)
	}
	if n, learners, _ := etcdMembers(t, ctx, "node-1"); n != 3 || learners != 0 {
		t.Errorf("after rebuilding node-3: %d started members, %d learners", n, learners)
	}
	// The cluster was made anew after the destroy: a new CA, a new client.
	cfg, err = clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	if cs, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if ready := readyServers(t, ctx, cs); strings.Join(ready, ",") != "node-1,node-2,node-3" {
		t.Errorf("Ready servers after rebuilding node-3: %v", ready)
	}
	homelabSettingsInPlace(t, ctx, cs, []string{"node-3"})
	wall, critical := wallAndCritical(t, rout)
	t.Logf("rebuild of a given host: wall %s, critical path %s", wall, critical)

	// A new disk for etcd under a running cluster: labctl will not mount
	// it over the live database; it names the path and how to move the
	// data, and changes nothing.
	nodes3 := []string{"node-1", "node-2", "node-3"}
	for _, n := range nodes3 {
		if out, err := bed.Exec(ctx, n, "sh", "-c", "mkdir -p /mnt/etcd-new && mount -t tmpfs -o size=64m tmpfs /mnt/etcd-new"); err != nil {
			t.Fatalf("%s: a new disk: %v %s", n, err, out)
		}
	}
	text, _ = os.ReadFile(file)
	moved := writeVariant(t, file, strings.Replace(string(text), "etcdMount: "+testbed.EtcdDisk, "etcdMount: /mnt/etcd-new", 1))
	before = nodeState(t, ctx, nodes3)
	var mout bytes.Buffer
	err = commands.Plan(ctx, commands.Env{Stdout: &mout, Stderr: &mout, Output: commands.OutputText}, commands.ProfileArg{File: moved}, commands.PlanOptions{Observe: true, Kubeconfig: kc, StateDir: state})
	if !errors.Is(err, flow.ErrPrerequisiteRefused) || !strings.Contains(err.Error(), k3s.DBDir+" already holds etcd") {
		t.Errorf("plan --observe with etcd moved to a new disk: %v\n%s", err, mout.String())
	}
	mout.Reset()
	err = commands.Create(ctx, commands.Env{Stdout: &mout, Stderr: &mout, Output: commands.OutputText}, commands.ProfileArg{File: moved}, commands.CreateOptions{NoFlux: true, StateDir: state, Kubeconfig: kc})
	t.Logf("create with etcd moved to a new disk: %v\n%s", err, mout.String())
	if !errors.Is(err, flow.ErrPrerequisiteRefused) || !strings.Contains(err.Error(), k3s.DBDir+" already holds etcd") || !strings.Contains(err.Error(), "mounting over it would hide a live etcd database") || !strings.Contains(err.Error(), "cp -a") || strings.Contains(mout.String(), "changes made") && !strings.Contains(mout.String(), " 0 changes made") {
		t.Errorf("create over the live etcd data: %v", err)
	}
	if after := nodeState(t, ctx, nodes3); after != before {
		t.Errorf("the refused create changed K3s:\nbefore %s\nafter  %s", before, after)
	}
	for _, n := range nodes3 {
		got, err := bed.Exec(ctx, n, "sh", "-c", "findmnt -n -o SOURCE -T "+k3s.DBDir+"/etcd; ls -A /mnt/etcd-new | wc -l; umount /mnt/etcd-new")
		if err != nil || got != "tmpfs[/k3s-db]\n0" {
			t.Errorf("%s after the refusal: %q %v", n, got, err)
		}
	}
}

// writeVariant writes text as a profile next to file.
func writeVariant(t *testing.T, file, text string) string {
	t.Helper()
	f, err := os.CreateTemp(filepath.Dir(file), "variant-*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	return f.Name()
}

// nodeState is what a change to K3s would alter on the nodes: config,
// token, unit files and the k3s binary, hashed, and the service's
// start time.
func nodeState(t *testing.T, ctx context.Context, nodes []string) string {
	t.Helper()
	var b strings.Builder
	for _, n := range nodes {
		out, err := bed.Exec(ctx, n, "sh", "-c", "sha256sum /etc/rancher/k3s/config.yaml /etc/rancher/k3s/cluster-token /etc/systemd/system/k3s.service /usr/local/bin/k3s | cut -c1-12 | tr '\n' ' '; systemctl show -p ActiveEnterTimestampMonotonic k3s")
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		fmt.Fprintf(&b, "%s: %s; ", n, out)
	}
	return b.String()
}

// clusterCA is the sha256 of the cluster's server CA as node has it.
func clusterCA(t *testing.T, ctx context.Context, node string) string {
	t.Helper()
	out, _ := bed.Exec(ctx, node, "sh", "-c", "sha256sum < /var/lib/rancher/k3s/server/tls/server-ca.crt | cut -d' ' -f1")
	return out
}

func kubeconfigHas(path, name string) (bool, error) {
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		return false, err
	}
	_, ok := cfg.Contexts[name]
	return ok, nil
}

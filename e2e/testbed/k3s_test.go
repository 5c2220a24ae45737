//go:build e2e

package testbed

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// k3sServer writes config.yaml on a node, starts the stand-in as the
// transient systemd unit k3s, and waits until it is up or has failed. It
// returns the unit's log.
func k3sServer(t *testing.T, ctx context.Context, b *Bed, node, config string) (string, bool) {
	t.Helper()
	if _, err := b.Exec(ctx, node, "sh", "-c", "systemctl reset-failed k3s 2>/dev/null; mkdir -p /etc/rancher/k3s && cat > /etc/rancher/k3s/config.yaml <<'EOF'\n"+config+"EOF"); err != nil {
		t.Fatal(err)
	}
	// Only this run's log counts: a node that ran k3s before has "k3s is
	// up and running" in its journal already.
	since, err := b.Exec(ctx, node, "date", "+@%s")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Exec(ctx, node, "systemd-run", "--unit=k3s", "--property=Restart=no", "/usr/local/bin/k3s", "server"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(4 * time.Minute)
	for {
		// The state is read before the log: a unit that failed has written
		// all it will write, and journald is synced before reading, so a
		// failure's log is complete (reading the log first raced with it).
		state, _ := b.Exec(ctx, node, "systemctl", "is-active", "k3s")
		_, _ = b.Exec(ctx, node, "journalctl", "--sync")
		log, _ := b.Exec(ctx, node, "journalctl", "-u", "k3s", "--since", since, "-o", "cat", "--no-pager")
		if strings.Contains(log, "k3s is up and running") {
			return log, true
		}
		if state == "failed" || state == "inactive" {
			// Wait for the log to settle: journald reads the unit's stdout
			// stream on its own schedule.
			for i := 0; i < 10; i++ {
				time.Sleep(500 * time.Millisecond)
				again, _ := b.Exec(ctx, node, "journalctl", "-u", "k3s", "--since", since, "-o", "cat", "--no-pager")
				if again == log {
					break
				}
				log = again
			}
			return log, false
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: k3s neither up nor failed after 4m:\n%s", node, log)
		}
		time.Sleep(time.Second)
	}
}

// k3sAgent runs `k3s agent` as a transient unit and waits until it
// registered its node or failed.
func k3sAgent(t *testing.T, ctx context.Context, b *Bed, node, config string) (string, bool) {
	t.Helper()
	if _, err := b.Exec(ctx, node, "sh", "-c", "mkdir -p /etc/rancher/k3s && cat > /etc/rancher/k3s/config.yaml <<'EOF'\n"+config+"EOF"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Exec(ctx, node, "systemd-run", "--unit=k3s-agent", "--property=Restart=no", "/usr/local/bin/k3s", "agent"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(3 * time.Minute); ; {
		state, _ := b.Exec(ctx, node, "systemctl", "is-active", "k3s-agent")
		log, _ := b.Exec(ctx, node, "journalctl", "-u", "k3s-agent", "-o", "cat", "--no-pager")
		if strings.Contains(log, "Successfully registered node") {
			return log, true
		}
		if state == "failed" || state == "inactive" || time.Now().After(deadline) {
			return log, false
		}
		time.Sleep(time.Second)
	}
}

// podTraffic runs n echo pods spread over the nodes behind a ClusterIP
// Service, then from node `from` asks every pod by its IP (routed to the
// other nodes' pod CIDRs) and the Service (kube-proxy's rules) until at
// least two different pods answered.
func podTraffic(t *testing.T, ctx context.Context, b *Bed, from string, n int) {
	t.Helper()
	manifest := fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: default}
spec:
  replicas: %d
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: echo}}}
      containers:
      - {name: echo, image: %s, imagePullPolicy: Never, command: ["/pause", "serve", ":8080"]}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
`, n, PauseImage)
	if out, err := b.Docker.Input(ctx, strings.NewReader(manifest), "exec", "-i", b.opts.Name+"-"+from, "kubectl", "--kubeconfig", "/etc/rancher/k3s/k3s.yaml", "apply", "-f", "-"); err != nil {
		t.Fatalf("apply: %v %s", err, out)
	}
	if out, err := kubectl(ctx, b, from, "rollout", "status", "deployment/echo", "--timeout=180s"); err != nil {
		pods, _ := kubectl(ctx, b, from, "get", "pods", "-o", "wide")
		t.Fatalf("echo did not roll out: %v %s\n%s", err, out, pods)
	}
	pods, _ := kubectl(ctx, b, from, "get", "pods", "-l", "app=echo", "-o", `go-template={{range .items}}{{.metadata.name}} {{.status.podIP}} {{.spec.nodeName}}{{"\n"}}{{end}}`)
	for _, line := range strings.Split(pods, "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		out, err := b.Exec(ctx, from, "curl", "-sS", "--max-time", "5", "http://"+f[1]+":8080/")
		if err != nil || out != f[0] {
			t.Errorf("pod %s on %s at %s from %s: %q %v", f[0], f[2], f[1], from, out, err)
		}
	}
	ip, _ := kubectl(ctx, b, from, "get", "service", "echo", "-o", "jsonpath={.spec.clusterIP}")
	seen := map[string]bool{}
	for i := 0; i < 30 && len(seen) < 2; i++ {
		if out, err := b.Exec(ctx, from, "curl", "-sS", "--max-time", "5", "http://"+ip+"/"); err == nil {
			seen[out] = true
		}
	}
	if len(seen) < 2 {
		t.Errorf("Service %s from %s reached %d pods, want at least 2: %v", ip, from, len(seen), seen)
	}
	t.Logf("%d echo pods answered by pod IP from %s; Service %s balanced over %d of them", n, from, ip, len(seen))
}

// etcdMembers lists the etcd members as seen from a node (gRPC gateway).
func etcdMembers(t *testing.T, ctx context.Context, b *Bed, node string) []string {
	t.Helper()
	tls := "/var/lib/rancher/k3s/server/tls/"
	out, err := b.Exec(ctx, node, "curl", "-sS", "--cacert", tls+"server-ca.crt", "--cert", tls+"etcd.crt", "--key", tls+"etcd.key",
		"-X", "POST", "https://127.0.0.1:2379/v3/cluster/member/list", "-d", "{}")
	if err != nil {
		t.Fatalf("%s: etcd member list: %v %s", node, err, out)
	}
	var resp struct {
		Members []struct {
			Name      string `json:"name"`
			IsLearner bool   `json:"isLearner"`
		} `json:"members"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("etcd member list: %v: %s", err, out)
	}
	var names []string
	for _, m := range resp.Members {
		if m.IsLearner {
			t.Errorf("member %s is still a learner", m.Name)
		}
		names = append(names, m.Name)
	}
	return names
}

// fatalLines keeps the stand-in's own log lines (not etcd's client noise).
func fatalLines(log string) string {
	var keep []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "level=") || strings.HasPrefix(l, "k3s.service") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// dump returns a node's stand-in logs, for failure messages.
func dump(ctx context.Context, b *Bed, node string) string {
	out, _ := b.Exec(ctx, node, "sh", "-c", "systemctl status k3s --no-pager | head -12; ps -eo pid,stat,args | grep -E \"k3s|kube\" | grep -v grep | cut -c1-120; journalctl -u k3s -o cat --no-pager | tail -20; echo '--- etcd'; tail -20 /var/lib/rancher/k3s/server/db/etcd.log; echo '--- apiserver'; tail -5 /var/lib/rancher/k3s/server/logs/kube-apiserver.log; echo '--- controller-manager'; tail -8 /var/lib/rancher/k3s/server/logs/kube-controller-manager.log; for c in containerd kubelet kube-proxy; do echo \"--- $c\"; grep -E '^[EF]' /var/lib/rancher/k3s/agent/logs/$c.log | tail -8; grep -iE 'level=(error|fatal)' /var/lib/rancher/k3s/agent/logs/$c.log | tail -5; done")
	return out
}

// waitNodesReady waits up to 3 minutes until the nodes are Ready, as
// seen from the node `from`.
func waitNodesReady(t *testing.T, ctx context.Context, b *Bed, from string, nodes ...string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		out, err := kubectl(ctx, b, from, "get", "nodes", "-o", `go-template={{range .items}}{{.metadata.name}}={{range .status.conditions}}{{if eq .type "Ready"}}{{.status}}{{end}}{{end}} {{end}}`)
		ready := 0
		for _, n := range nodes {
			if err == nil && strings.Contains(" "+out+" ", " "+n+"=True ") {
				ready++
			}
		}
		if ready == len(nodes) {
			return
		}
		if time.Now().After(deadline) {
			var dumps []string
			for _, n := range nodes {
				dumps = append(dumps, dump(ctx, b, n))
			}
			t.Fatalf("nodes %v not all Ready after 3m: %q %v\n%s", nodes, out, err, strings.Join(dumps, "\n"))
		}
		time.Sleep(2 * time.Second)
	}
}

// waitLog waits up to a minute for text in a node's k3s journal.
func waitLog(t *testing.T, ctx context.Context, b *Bed, node, text string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; {
		log, _ := b.Exec(ctx, node, "journalctl", "-u", "k3s", "-o", "cat", "--no-pager")
		if strings.Contains(log, text) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %q not logged within a minute:\n%s", node, text, fatalLines(log))
		}
		time.Sleep(time.Second)
	}
}

// podsRun runs a Deployment of n pause pods spread over the nodes and
// waits until all run.
func podsRun(t *testing.T, ctx context.Context, b *Bed, from string, n int) {
	t.Helper()
	manifest := fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: sandbox-check, namespace: default}
spec:
  replicas: %d
  selector: {matchLabels: {app: sandbox-check}}
  template:
    metadata: {labels: {app: sandbox-check}}
    spec:
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: sandbox-check}}}
      containers:
      - {name: pause, image: %s, imagePullPolicy: Never}
`, n, PauseImage)
	if out, err := b.Docker.Input(ctx, strings.NewReader(manifest), "exec", "-i", b.opts.Name+"-"+from, "kubectl", "--kubeconfig", "/etc/rancher/k3s/k3s.yaml", "apply", "-f", "-"); err != nil {
		t.Fatalf("apply: %v %s", err, out)
	}
	start := time.Now()
	if out, err := kubectl(ctx, b, from, "rollout", "status", "deployment/sandbox-check", "--timeout=180s"); err != nil {
		pods, _ := kubectl(ctx, b, from, "get", "pods", "-o", "wide")
		events, _ := kubectl(ctx, b, from, "get", "events", "-A")
		t.Fatalf("deployment did not roll out: %v %s\n%s\n%s", err, out, pods, events)
	}
	nodes, _ := kubectl(ctx, b, from, "get", "pods", "-l", "app=sandbox-check", "-o", "jsonpath={.items[*].spec.nodeName}")
	t.Logf("%d pods running in %s on nodes %s", n, time.Since(start).Round(time.Millisecond), nodes)
}

func kubectl(ctx context.Context, b *Bed, node string, args ...string) (string, error) {
	return b.Exec(ctx, node, append([]string{"kubectl", "--kubeconfig", "/etc/rancher/k3s/k3s.yaml", "--request-timeout=20s"}, args...)...)
}

// TestK3sStandInFormsAnHAControlPlane is the stand-in's self-test on bed
// nodes: cluster-init, K3s's token format, kubeconfig, a wrong CA hash, a
// wrong secret and a critical-setting mismatch refused, two joins as real
// etcd members, quorum surviving the loss of the first server, a rebuilt
// server refused while its dead member is registered and admitted after
// its removal, and a server without --server forming its own cluster.
func TestK3sStandInFormsAnHAControlPlane(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	b, err := New(ctx, Options{Name: "labctl-tb-k3s", Subnet: "172.30.11.0/24", Log: logf(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	bin, err := BuildKube(ctx, b.opts.Cache, logf(t))
	if err != nil {
		t.Fatal(err)
	}
	ips := map[string]string{"s1": "172.30.11.11", "s2": "172.30.11.12", "s3": "172.30.11.13"}
	for _, n := range []string{"s1", "s2", "s3"} {
		if _, err := b.StartNode(ctx, n, ips[n]); err != nil {
			t.Fatal(err)
		}
		if err := b.InstallKube(ctx, n, bin); err != nil {
			t.Fatal(err)
		}
	}
	common := "token: bed-secret-123\ncluster-cidr: 10.42.0.0/16\nservice-cidr: 10.43.0.0/16\n"

	start := time.Now()
	if log, ok := k3sServer(t, ctx, b, "s1", "cluster-init: true\nnode-ip: "+ips["s1"]+"\n"+common); !ok {
		t.Fatalf("s1 did not come up:\n%s", log)
	}
	t.Logf("s1 (cluster-init) up in %s", time.Since(start).Round(time.Millisecond))
	tok, err := b.Exec(ctx, "s1", "cat", "/var/lib/rancher/k3s/server/token")
	if err != nil || !strings.HasPrefix(tok, "K10") || !strings.HasSuffix(tok, "::server:bed-secret-123") || len(tok) != len("K10")+64+len("::server:bed-secret-123") {
		t.Fatalf("token %q %v", tok, err)
	}
	if mode, _ := b.Exec(ctx, "s1", "stat", "-c", "%a", "/etc/rancher/k3s/k3s.yaml"); mode != "600" {
		t.Errorf("k3s.yaml mode %s", mode)
	}
	if out, err := kubectl(ctx, b, "s1", "get", "--raw", "/readyz"); err != nil || out != "ok" {
		t.Fatalf("API on s1: %q %v\n%s", out, err, dump(ctx, b, "s1"))
	}

	server := "server: https://" + ips["s1"] + ":6443\n"
	refusals := []struct{ name, config, want string }{
		{"wrong CA hash", server + "node-ip: " + ips["s3"] + "\ntoken: K10" + strings.Repeat("0", 64) + "::server:bed-secret-123\n", "token CA hash does not match"},
		{"wrong secret", server + "node-ip: " + ips["s3"] + "\ntoken: " + strings.Replace(tok, "bed-secret-123", "wrong", 1) + "\n", "401 Unauthorized"},
		{"critical mismatch", server + "node-ip: " + ips["s3"] + "\ntoken: " + tok + "\ncluster-cidr: 10.52.0.0/16\n", "critical configuration value mismatch"},
		{"unknown option", server + "node-ip: " + ips["s3"] + "\ntoken: " + tok + "\nno-such-option: true\n", `unknown option \"no-such-option\"`},
	}
	for _, r := range refusals {
		log, ok := k3sServer(t, ctx, b, "s3", r.config)
		if ok || !strings.Contains(log, r.want) {
			t.Errorf("%s: up=%v, log lacks %q:\n%s", r.name, ok, r.want, log)
		}
		if out, _ := b.Exec(ctx, "s3", "sh", "-c", "ls /var/lib/rancher/k3s/server/db/etcd 2>&1"); !strings.Contains(out, "No such file") {
			t.Errorf("%s left etcd data: %s", r.name, out)
		}
	}

	for _, n := range []string{"s2", "s3"} {
		start := time.Now()
		if log, ok := k3sServer(t, ctx, b, n, server+"node-ip: "+ips[n]+"\n"+common); !ok {
			t.Fatalf("%s did not join:\n%s", n, log)
		}
		t.Logf("%s joined in %s", n, time.Since(start).Round(time.Millisecond))
	}
	if m := etcdMembers(t, ctx, b, "s2"); len(m) != 3 {
		t.Fatalf("etcd members = %v, want 3", m)
	}
	start = time.Now()
	waitNodesReady(t, ctx, b, "s2", "s1", "s2", "s3")
	t.Logf("3 nodes Ready %s after the last join", time.Since(start).Round(time.Millisecond))
	labels, _ := kubectl(ctx, b, "s2", "get", "node", "s2", "-o", `go-template={{range $k, $v := .metadata.labels}}{{$k}}={{$v}} {{end}}{{range $k, $v := .metadata.annotations}}{{$k}}={{$v}} {{end}}`)
	for _, want := range []string{"node-role.kubernetes.io/control-plane=true", "node-role.kubernetes.io/etcd=true", "node-role.kubernetes.io/master=true", "etcd.k3s.cattle.io/node-name=s2-", "etcd.k3s.cattle.io/node-address=" + ips["s2"], "node.kubernetes.io/instance-type=k3s"} {
		if !strings.Contains(labels, want) {
			t.Errorf("node s2 lacks %s: %s", want, labels)
		}
	}
	podsRun(t, ctx, b, "s2", 3)

	// An agent joins with the server's token and runs a kubelet; pods on
	// every node answer across nodes, by pod IP and through a Service.
	if _, err := b.StartNode(ctx, "a1", "172.30.11.21"); err != nil {
		t.Fatal(err)
	}
	if err := b.InstallKube(ctx, "a1", bin); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if log, ok := k3sAgent(t, ctx, b, "a1", server+"node-ip: 172.30.11.21\ntoken: "+tok+"\n"); !ok {
		t.Fatalf("agent did not start:\n%s", log)
	}
	waitNodesReady(t, ctx, b, "s2", "a1")
	t.Logf("agent a1 Ready in %s", time.Since(start).Round(time.Millisecond))
	if roles, _ := kubectl(ctx, b, "s2", "get", "node", "a1", "-o", "jsonpath={.metadata.labels}"); strings.Contains(roles, "node-role.kubernetes.io") {
		t.Errorf("agent has server roles: %s", roles)
	}
	podTraffic(t, ctx, b, "s1", 4)

	// Lose the first server: the other two keep quorum (2 of 3) and serve
	// reads and writes.
	if err := b.Kill(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"s2", "s3"} {
		if out, err := kubectl(ctx, b, n, "get", "--raw", "/readyz"); err != nil || out != "ok" {
			t.Errorf("API on %s after losing s1: %q %v", n, out, err)
		}
	}
	if out, err := kubectl(ctx, b, "s2", "create", "namespace", "quorum-check"); err != nil {
		t.Fatalf("write after losing s1: %v %s", err, out)
	}
	if out, err := kubectl(ctx, b, "s3", "get", "namespace", "quorum-check", "-o", "name"); err != nil || out != "namespace/quorum-check" {
		t.Fatalf("read the write from s3: %q %v", out, err)
	}
	// s1 is rebuilt at its old address: etcd refuses the join while the
	// dead member is still registered, and accepts it once removed.
	if err := b.RemoveNode(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.StartNode(ctx, "s1", ips["s1"]); err != nil {
		t.Fatal(err)
	}
	if err := b.InstallKube(ctx, "s1", bin); err != nil {
		t.Fatal(err)
	}
	rejoin := "server: https://" + ips["s2"] + ":6443\nnode-ip: " + ips["s1"] + "\n" + common
	// etcd's own refusal: "unhealthy cluster" while the dead member counts
	// against quorum (its health check comes first), else "Peer URLs
	// already exists".
	if log, ok := k3sServer(t, ctx, b, "s1", rejoin); ok || !strings.Contains(log, "failed to join etcd cluster") {
		t.Fatalf("rejoin over a registered member: up=%v\n%s", ok, fatalLines(log))
	}
	etcdTLS := "--cacert /var/lib/rancher/k3s/server/tls/server-ca.crt --cert /var/lib/rancher/k3s/server/tls/etcd.crt --key /var/lib/rancher/k3s/server/tls/etcd.key"
	id, err := b.Exec(ctx, "s2", "sh", "-c", "curl -sS "+etcdTLS+" -X POST https://127.0.0.1:2379/v3/cluster/member/list -d '{}' | tr '{' '\\n' | grep '"+ips["s1"]+":2380' | sed -E 's/.*\"ID\":\"([0-9]+)\".*/\\1/'")
	if err != nil || id == "" {
		t.Fatalf("find s1's member id: %q %v", id, err)
	}
	if out, err := b.Exec(ctx, "s2", "sh", "-c", "curl -sS "+etcdTLS+" -X POST https://127.0.0.1:2379/v3/cluster/member/remove -d '{\"ID\":\""+id+"\"}'"); err != nil || strings.Contains(out, "error") {
		t.Fatalf("remove s1's member: %q %v", out, err)
	}
	if log, ok := k3sServer(t, ctx, b, "s1", rejoin); !ok {
		t.Fatalf("rejoin after the member was removed:\n%s\n%s", log, dump(ctx, b, "s1"))
	}
	if m := etcdMembers(t, ctx, b, "s2"); len(m) != 3 {
		t.Fatalf("members after the rebuild = %v, want 3", m)
	}
	// The rebuilt host has a new node password: its kubelet is refused
	// while the old Node (and its password Secret) exists.
	waitLog(t, ctx, b, "s1", "Node password rejected")
	if out, err := kubectl(ctx, b, "s2", "delete", "node", "s1"); err != nil {
		t.Fatalf("delete node s1: %v %s", err, out)
	}
	waitNodesReady(t, ctx, b, "s2", "s1")

	// Deleting a server's Node removes its etcd member.
	if out, err := kubectl(ctx, b, "s2", "delete", "node", "s3"); err != nil {
		t.Fatalf("delete node s3: %v %s", err, out)
	}
	for deadline := time.Now().Add(time.Minute); ; {
		m := etcdMembers(t, ctx, b, "s2")
		if len(m) == 2 && !strings.HasPrefix(m[0], "s3-") && !strings.HasPrefix(m[1], "s3-") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("members a minute after deleting node s3: %v", m)
		}
		time.Sleep(2 * time.Second)
	}

	// Day 2, as labctl relies on it: the release an install put in place,
	// etcd-snapshot save/ls/delete, and a restore with --cluster-reset:
	// the snapshot restored on s2 alone, s1 rejoining after its etcd data
	// is moved aside, what was written after the snapshot gone.
	if v, err := b.Exec(ctx, "s2", "sh", "-c", "mkdir -p /usr/local/lib/k3s-standin && echo v1.34.5+k3s1 > /usr/local/lib/k3s-standin/version && k3s --version && rm /usr/local/lib/k3s-standin/version"); err != nil || !strings.HasPrefix(v, "k3s version v1.34.5+k3s1 ") {
		t.Errorf("the installed release is not reported: %q %v", v, err)
	}
	if out, err := b.Exec(ctx, "s2", "sh", "-c", "k3s etcd-snapshot save --name selftest 2>&1"); err != nil || !strings.Contains(out, "Snapshot selftest-s2-") {
		t.Fatalf("etcd-snapshot save: %v %s", err, out)
	}
	snap, err := b.Exec(ctx, "s2", "sh", "-c", "ls /var/lib/rancher/k3s/server/db/snapshots/selftest-s2-*")
	if err != nil || snap == "" {
		t.Fatalf("snapshot file: %q %v", snap, err)
	}
	if out, _ := b.Exec(ctx, "s2", "k3s", "etcd-snapshot", "ls"); !strings.Contains(out, filepath.Base(snap)) {
		t.Errorf("etcd-snapshot ls lacks %s:\n%s", snap, out)
	}
	if out, err := kubectl(ctx, b, "s2", "create", "namespace", "after-snapshot"); err != nil {
		t.Fatalf("write after the snapshot: %v %s", err, out)
	}
	cfg2, _ := b.Exec(ctx, "s2", "cat", "/etc/rancher/k3s/config.yaml")
	for _, n := range []string{"s1", "s2"} {
		if _, err := b.Exec(ctx, n, "systemctl", "stop", "k3s"); err != nil {
			t.Fatal(err)
		}
	}
	out, err := b.Exec(ctx, "s2", "sh", "-c", "k3s server --cluster-reset --cluster-reset-restore-path="+snap+" 2>&1")
	if err != nil || !strings.Contains(out, "Managed etcd cluster membership has been reset, restart without --cluster-reset flag now") {
		t.Fatalf("cluster-reset with a restore path: %v\n%s", err, out)
	}
	if _, err := b.Exec(ctx, "s2", "test", "-f", "/var/lib/rancher/k3s/server/db/reset-flag"); err != nil {
		t.Error("no reset-flag after the reset")
	}
	if log, ok := k3sServer(t, ctx, b, "s2", cfg2+"\n"); !ok || !strings.Contains(log, "was previously reset, deleting marker") {
		t.Fatalf("s2 after the restore: up=%v\n%s", ok, fatalLines(log))
	}
	if m := etcdMembers(t, ctx, b, "s2"); len(m) != 1 {
		t.Errorf("members after the restore: %v, want s2 alone", m)
	}
	if out, err := kubectl(ctx, b, "s2", "get", "namespace", "after-snapshot", "-o", "name"); err == nil {
		t.Errorf("a namespace written after the snapshot survived the restore: %s", out)
	}
	if out, err := kubectl(ctx, b, "s2", "get", "namespace", "quorum-check", "-o", "name"); err != nil || out != "namespace/quorum-check" {
		t.Errorf("a namespace written before the snapshot is gone: %q %v", out, err)
	}
	if _, err := b.Exec(ctx, "s1", "sh", "-c", "mv /var/lib/rancher/k3s/server/db /var/lib/rancher/k3s/server/db-before-restore"); err != nil {
		t.Fatal(err)
	}
	if log, ok := k3sServer(t, ctx, b, "s1", rejoin); !ok {
		t.Fatalf("s1 rejoining the restored s2:\n%s", fatalLines(log))
	}
	if m := etcdMembers(t, ctx, b, "s2"); len(m) != 2 {
		t.Errorf("members after s1 rejoined: %v", m)
	}
	if out, err := b.Exec(ctx, "s2", "sh", "-c", "k3s etcd-snapshot delete "+filepath.Base(snap)+" 2>&1"); err != nil {
		t.Errorf("etcd-snapshot delete: %v %s", err, out)
	}
	if out, _ := b.Exec(ctx, "s2", "sh", "-c", "ls /var/lib/rancher/k3s/server/db/snapshots/"); strings.Contains(out, "selftest") {
		t.Errorf("snapshot left after delete: %s", out)
	}

	// A fresh server with neither cluster-init nor server forms a cluster
	// of its own: the first-server trap labctl must avoid.
	if _, err := b.StartNode(ctx, "s4", "172.30.11.14"); err != nil {
		t.Fatal(err)
	}
	if err := b.InstallKube(ctx, "s4", bin); err != nil {
		t.Fatal(err)
	}
	if log, ok := k3sServer(t, ctx, b, "s4", "node-ip: 172.30.11.14\n"+common); !ok {
		t.Fatalf("s4 did not start:\n%s", log)
	}
	tok4, _ := b.Exec(ctx, "s4", "cat", "/var/lib/rancher/k3s/server/token")
	if tok4[:67] == tok[:67] {
		t.Error("a server started without --server joined the existing cluster's CA")
	}
	if m := etcdMembers(t, ctx, b, "s4"); len(m) != 1 {
		t.Errorf("s4 members = %v, want its own single member", m)
	}
}

//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/labctl/labctl/commands"
	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/provision/proxmox/pvesim"
)

// servers is the production-e2e cluster on the bed: names, addresses,
// VM ids, and a client per server (the merged context's credentials,
// another server address).
type servers struct {
	names []string
	ips   []string
	vmids []int
	cfg   *rest.Config
}

func (s servers) client(t *testing.T, i int) *kubernetes.Clientset {
	t.Helper()
	c := rest.CopyConfig(s.cfg)
	c.Host = "https://" + s.ips[i] + ":6443"
	c.Timeout = 5 * time.Second
	cs, err := kubernetes.NewForConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// poller asks /readyz through the given servers every 250 ms and counts
// the ticks on which at least one of them answered.
type poller struct {
	ticks, up atomic.Int64
	stop      func()
	done      chan struct{}
}

func pollAPI(t *testing.T, s servers, through ...int) *poller {
	ctx, cancel := context.WithCancel(context.Background())
	p := &poller{stop: cancel, done: make(chan struct{})}
	var clients []*kubernetes.Clientset
	for _, i := range through {
		clients = append(clients, s.client(t, i))
	}
	go func() {
		defer close(p.done)
		for ctx.Err() == nil {
			ok := false
			for _, c := range clients {
				rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				b, err := c.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
				cancel()
				if err == nil && string(b) == "ok" {
					ok = true
					break
				}
			}
			p.ticks.Add(1)
			if ok {
				p.up.Add(1)
			}
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	return p
}

// result stops the poller and says how often the API answered.
func (p *poller) result() (float64, string) {
	p.stop()
	<-p.done
	ticks, up := p.ticks.Load(), p.up.Load()
	if ticks == 0 {
		return 0, "no samples"
	}
	return float64(up) / float64(ticks), fmt.Sprintf("%d of %d samples (every 250 ms) answered", up, ticks)
}

// etcdMembers is the member list as node sees it: "name learner" lines.
func etcdMembers(t *testing.T, ctx context.Context, node string) (members int, learners int, raw string) {
	t.Helper()
	out, err := bed.Exec(ctx, node, "sh", "-c", etcdCurl+" https://127.0.0.1:2379/v3/cluster/member/list -d '{}'")
	if err != nil {
		t.Fatalf("%s: etcd member list: %v %s", node, err, out)
	}
	var list struct {
		Header struct {
			ClusterID string `json:"cluster_id"`
		} `json:"header"`
		Members []struct {
			Name       string   `json:"name"`
			ClientURLs []string `json:"clientURLs"`
			IsLearner  bool     `json:"isLearner"`
		} `json:"members"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("%s: %v: %s", node, err, out)
	}
	for _, m := range list.Members {
		if m.Name != "" && len(m.ClientURLs) > 0 {
			members++
		}
		if m.IsLearner {
			learners++
		}
	}
	return members, learners, list.Header.ClusterID
}

const etcdCurl = "curl -sS --max-time 5 --cacert /var/lib/rancher/k3s/server/tls/etcd/server-ca.crt --cert /var/lib/rancher/k3s/server/tls/etcd/client.crt --key /var/lib/rancher/k3s/server/tls/etcd/client.key -X POST"

// moveEtcdLeader makes the member at address to etcd's leader (the
// leader hands over through etcd's own move-leader call), so that the
// scenario that kills that server always kills the leader: the rebuild
// then begins while the others elect a new one.
func moveEtcdLeader(t *testing.T, ctx context.Context, via, to string) {
	t.Helper()
	var list struct {
		Members []struct {
			ID         string   `json:"ID"`
			PeerURLs   []string `json:"peerURLs"`
			ClientURLs []string `json:"clientURLs"`
		} `json:"members"`
	}
	var status struct {
		Leader string `json:"leader"`
	}
	ask := func(url string, v any) {
		t.Helper()
		out, err := bed.Exec(ctx, via, "sh", "-c", etcdCurl+" "+url+" -d '{}'")
		if err != nil {
			t.Fatalf("%s: %s: %v %s", via, url, err, out)
		}
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("%s: %s: %v: %s", via, url, err, out)
		}
	}
	ask("https://127.0.0.1:2379/v3/cluster/member/list", &list)
	ask("https://127.0.0.1:2379/v3/maintenance/status", &status)
	target, leaderURL := "", ""
	for _, m := range list.Members {
		if len(m.PeerURLs) > 0 && strings.Contains(m.PeerURLs[0], "//"+to+":") {
			target = m.ID
		}
		if m.ID == status.Leader && len(m.ClientURLs) > 0 {
			leaderURL = m.ClientURLs[0]
		}
	}
	if target == "" || leaderURL == "" {
		t.Fatalf("etcd: no member at %s or no leader (%s) in %+v", to, status.Leader, list.Members)
	}
	if target == status.Leader {
		t.Logf("etcd: the member at %s leads already", to)
		return
	}
	out, err := bed.Exec(ctx, via, "sh", "-c", etcdCurl+" "+leaderURL+"/v3/maintenance/transfer-leadership -d '{\"targetID\":\""+target+"\"}'")
	if err != nil || strings.Contains(out, `"error"`) {
		t.Fatalf("etcd: move the leader to %s: %v %s", to, err, out)
	}
	ask("https://127.0.0.1:2379/v3/maintenance/status", &status)
	if status.Leader != target {
		t.Fatalf("etcd: the leader is %s after the move, want %s (%s)", status.Leader, target, to)
	}
	t.Logf("etcd: leadership moved to the member at %s", to)
}

// changesOn counts the change events per host, and per host the step IDs
// that made them.
func changesOn(events []plan.Event) map[string][]string {
	out := map[string][]string{}
	for _, e := range events {
		if e.Kind == plan.KindChange {
			out[e.Host] = append(out[e.Host], e.Step+": "+e.Message)
		}
	}
	return out
}

// rebuildE2E are the rebuild scenarios, run on the production-e2e
// cluster TestCreateProductionOnSimulatedProxmoxFromNothing made (one
// cluster for create → rebuild → quorum refusal → destroy).
func rebuildE2E(t *testing.T, ctx context.Context, sim *pvesim.Sim, file, kc, state string, px commands.ProxmoxOptions, env map[string]string, v *verifier) {
	labctl := filepath.Join(t.TempDir(), "labctl")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", labctl, "../cmd/labctl").CombinedOutput(); err != nil {
		t.Fatalf("build labctl: %v %s", err, out)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	s := servers{names: []string{"kube-srv-1", "kube-srv-2", "kube-srv-3"}, ips: []string{"172.30.20.61", "172.30.20.62", "172.30.20.63"}, vmids: []int{201, 202, 203}, cfg: cfg}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "rebuild-e2e", Namespace: "default"}, Data: map[string]string{"written": "before the rebuilds"}}
	if _, err := s.client(t, 0).CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	configMapThere := func(via int) bool {
		got, err := s.client(t, via).CoreV1().ConfigMaps("default").Get(ctx, "rebuild-e2e", metav1.GetOptions{})
		return err == nil && got.Data["written"] == "before the rebuilds"
	}
	_, _, clusterID := etcdMembers(t, ctx, "kube-srv-1")
	ca := clusterCA(t, ctx, "kube-srv-1")
	afterRebuild := func(name string, via int) {
		t.Helper()
		n, learners, id := etcdMembers(t, ctx, s.names[via])
		if n != 3 || learners != 0 || id != clusterID {
			t.Errorf("after rebuilding %s: %d started members, %d learners, cluster %s (was %s)", name, n, learners, id, clusterID)
		}
		if got := clusterCA(t, ctx, name); got != ca {
			t.Errorf("%s joined another cluster: CA %s, the cluster's is %s", name, got, ca)
		}
		if ready := readyServers(t, ctx, s.client(t, via)); strings.Join(ready, ",") != "kube-srv-1,kube-srv-2,kube-srv-3" {
			t.Errorf("after rebuilding %s: Ready servers %v", name, ready)
		}
		if !configMapThere(via) {
			t.Errorf("after rebuilding %s: the ConfigMap written before is gone", name)
		}
	}

	// 1. kube-srv-2's VM loses power while it leads etcd; the rebuild,
	// begun at once, waits for the others' election and goes through
	// them.
	t.Run("RebuildDeadSecondServer", func(t *testing.T) {
		moveEtcdLeader(t, ctx, "kube-srv-1", s.ips[1])
		sim.PowerOff(s.vmids[1])
		if err := bed.Kill(ctx, "kube-srv-2"); err != nil {
			t.Fatal(err)
		}
		p := pollAPI(t, s, 0, 2)
		rec := &plan.Recorder{}
		var out bytes.Buffer
		e := commands.Env{Stdout: &out, Stderr: &out, Output: commands.OutputText, Now: time.Now, Events: rec}
		start := time.Now()
		err := commands.Rebuild(ctx, e, commands.ProfileArg{File: file}, commands.RebuildOptions{Node: "kube-srv-2", Kubeconfig: kc, StateDir: state, Proxmox: px})
		took := time.Since(start)
		avail, samples := p.result()
		t.Logf("rebuild kube-srv-2 (%s):\n%s", took.Round(time.Millisecond), out.String())
		if err != nil {
			t.Fatal(err)
		}
		wall, critical := wallAndCritical(t, out.String())
		per := changesOn(rec.Events())
		t.Logf("rebuild kube-srv-2: wall %s, critical path %s, ratio %.3f; API through kube-srv-1/kube-srv-3: %.1f%% (%s); changes on kube-srv-1: %d %v, on kube-srv-3: %d",
			wall, critical, float64(wall)/float64(critical), 100*avail, samples, len(per["kube-srv-1"]), per["kube-srv-1"], len(per["kube-srv-3"]))
		for _, h := range []string{"kube-srv-1", "kube-srv-3"} {
			for _, c := range per[h] {
				if !strings.HasPrefix(c, "etcd-snapshot: ") {
					t.Errorf("a change on healthy %s: %s", h, c)
				}
			}
		}
		if avail < 0.95 {
			t.Errorf("the API through the healthy servers answered only %.1f%% of the time", 100*avail)
		}
		snaps, _ := filepath.Glob(filepath.Join(state, "production-e2e", "snapshots", "labctl-pre-rebuild-kube-srv-2-*[0-9]"))
		if len(snaps) != 1 {
			t.Errorf("snapshots in local state: %v", snaps)
		} else if st, err := os.Stat(snaps[0]); err != nil || st.Mode().Perm() != 0o600 || st.Size() == 0 {
			t.Errorf("snapshot %s: %v %v", snaps[0], st.Mode(), err)
		}
		afterRebuild("kube-srv-2", 0)
	})

	// 2. The first server: killed, then the rebuild itself killed after
	// the member's removal and after the re-clone; each re-run continues.
	t.Run("RebuildFirstServerKilledTwice", func(t *testing.T) {
		sim.PowerOff(s.vmids[0])
		if err := bed.Kill(ctx, "kube-srv-1"); err != nil {
			t.Fatal(err)
		}
		p := pollAPI(t, s, 1, 2)
		start := time.Now()
		for _, stage := range []string{"remove-member/kube-srv-1", "vm-clone/kube-srv-1", ""} {
			killed, events := runLabctlJSON(t, ctx, labctl, env, stage, "rebuild", "-f", file, "kube-srv-1", "--state-dir", state, "--kubeconfig", kc)
			done := doneEvent(events)
			switch {
			case stage != "" && !killed:
				t.Fatalf("the rebuild ended before %s: %+v", stage, done)
			case stage == "" && done.Error != "":
				t.Fatalf("final rebuild run: %s", done.Error)
			case stage != "":
				t.Logf("killed labctl rebuild (SIGKILL) after %s", stage)
			}
		}
		avail, samples := p.result()
		t.Logf("rebuild kube-srv-1, killed twice: %s in all; API through kube-srv-2/kube-srv-3: %.1f%% (%s)", time.Since(start).Round(time.Millisecond), 100*avail, samples)
		cfgYAML, _ := bed.Exec(ctx, "kube-srv-1", "cat", "/etc/rancher/k3s/config.yaml")
		if strings.Contains(cfgYAML, "cluster-init") || !strings.Contains(cfgYAML, "server: https://172.30.20.62:6443") {
			t.Errorf("kube-srv-1's config.yaml after its rebuild:\n%s", cfgYAML)
		}
		if snaps, _ := filepath.Glob(filepath.Join(state, "production-e2e", "snapshots", "labctl-pre-rebuild-kube-srv-1-*[0-9]")); len(snaps) != 1 {
			t.Errorf("the interrupted rebuild took %d snapshots, want 1: %v", len(snaps), snaps)
		}
		afterRebuild("kube-srv-1", 1)
	})

	// 3.–5. Upgrades: refused ones first, then v1.34.4 → v1.34.5 killed
	// after the first server, then a config.yaml change.
	file = upgradeE2E(t, ctx, s, file, kc, state, labctl, env)

	// 6. Restore: a snapshot, a write after it, two servers stopped (no
	// quorum: the rebuild refuses), the restore, the write gone.
	restoreE2E(t, ctx, s, file, kc, state, px)
	v.file = file
	start := time.Now()
	memberRemovedE2E(t, ctx, v)
	t.Logf("removed-member verify: %s", time.Since(start).Round(time.Millisecond))
}

// runLabctlJSON runs labctl with args and -o json, SIGKILLs it once
// killAfter's step is done ("" runs it to the end), and returns whether
// it was killed and every event it printed.
func runLabctlJSON(t *testing.T, ctx context.Context, labctl string, env map[string]string, killAfter string, args ...string) (bool, []plan.Event) {
	t.Helper()
	cmd := exec.CommandContext(ctx, labctl, append(args, "-o", "json")...)
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var killed bool
	var events []plan.Event
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e plan.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("not an event: %q", sc.Text())
		}
		events = append(events, e)
		// The plan shown before the run (upgrade, restore) is a dry run:
		// only the real step counts.
		if e.Kind == plan.KindStepDone && e.Step == killAfter && !e.DryRun {
			_ = cmd.Process.Kill()
			killed = true
			break
		}
	}
	err = cmd.Wait()
	if !killed && err != nil {
		t.Fatalf("labctl %v: %v\n%s", args, err, stderr.String())
	}
	return killed, events
}

// doneEvent is the run's done event.
func doneEvent(events []plan.Event) plan.Event {
	for _, e := range events {
		if e.Kind == plan.KindDone {
			return e
		}
	}
	return plan.Event{}
}

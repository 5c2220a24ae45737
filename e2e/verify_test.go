//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/labctl/labctl/bootstrap"
	"github.com/labctl/labctl/commands"
	"github.com/labctl/labctl/internal/dnstest"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/verify"
)

// verifier runs `labctl verify` on one profile of the bed.
type verifier struct {
	file string
	opts commands.VerifyOptions
	// baseline is the non-ok checks the bed explains, found first.
	baseline []string
	// volatile, if set, names the bed-explained checks that may come
	// and go between runs (etcd's fsync p99 after a restart, say):
	// expect neither requires nor refuses them unless a fault wants one.
	volatile func(check string) bool
}

// run verifies once: the non-ok checks ("fail etcd/members/cluster"),
// the text table and the wall time.
func (v *verifier) run(t *testing.T, ctx context.Context) ([]string, string, time.Duration) {
	t.Helper()
	var js, txt bytes.Buffer
	start := time.Now()
	err := commands.Verify(ctx, commands.Env{Stdout: &js, Stderr: &js, Output: commands.OutputJSON, Now: time.Now}, commands.ProfileArg{File: v.file}, v.opts)
	took := time.Since(start)
	if err != nil && !errors.Is(err, commands.ErrVerifyFailed) {
		t.Fatalf("verify: %v\n%s", err, js.String())
	}
	var r verify.Report
	sc := bufio.NewScanner(&js)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var c verify.Check
		if json.Unmarshal(sc.Bytes(), &c) == nil && c.Group != "" {
			r.Checks = append(r.Checks, c)
		}
	}
	if (err != nil) != r.Failed() {
		t.Errorf("verify returned %v with %s", err, r.Summary())
	}
	_ = verify.WriteText(&txt, r)
	bad := r.NotOK()
	slices.Sort(bad)
	return bad, txt.String(), took
}

// fluxSettled waits, as labctl create's last step does (reconcile
// requests along the dependsOn chain), until every Kustomization is
// Ready again at the source's revision: after a K3s restart or a restore
// Flux would get there on its own at its retry and requeue intervals,
// a minute or two later, which is Flux's time, not verify's.
func (v *verifier) fluxSettled(t *testing.T, ctx context.Context) {
	t.Helper()
	l, err := profiles.Loader{}.LoadFile(v.file)
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	start := time.Now()
	b := &bootstrap.Backend{Spec: &l.Spec, Kubeconfig: v.opts.Kubeconfig, Context: l.Metadata.Name, Log: &log, Timeout: 4 * time.Minute}
	if err := b.WaitKustomizations(ctx); err != nil {
		t.Fatalf("Flux did not settle: %v\n%s", err, log.String())
	}
	t.Logf("Flux settled in %s", time.Since(start).Round(100*time.Millisecond))
}

// settled is what expect compares: the non-ok checks without the
// volatile ones a fault does not want.
func (v *verifier) settled(checks, want []string) []string {
	if v.volatile == nil {
		return checks
	}
	return slices.DeleteFunc(slices.Clone(checks), func(c string) bool { return v.volatile(c) && !slices.Contains(want, c) })
}

// expect polls verify until its non-ok checks are exactly the baseline
// plus want (a fault takes effect, or its repair, within timeout). Each
// distinct state on the way is logged, so a timeout says where it stood.
func (v *verifier) expect(t *testing.T, ctx context.Context, what string, timeout time.Duration, want ...string) time.Duration {
	t.Helper()
	all := v.settled(append(slices.Clone(v.baseline), want...), want)
	slices.Sort(all)
	all = slices.Compact(all)
	deadline := time.Now().Add(timeout)
	start := time.Now()
	var last []string
	for {
		got, text, took := v.run(t, ctx)
		cmp := v.settled(got, want)
		if slices.Equal(cmp, all) {
			t.Logf("verify %s: found as expected in %s (one run %s): %v", what, time.Since(start).Round(time.Millisecond), took.Round(time.Millisecond), want)
			return took
		}
		if time.Now().After(deadline) {
			t.Errorf("verify %s: after %s not ok %v\nwant %v\n%s", what, timeout, cmp, all, text)
			return took
		}
		if !slices.Equal(cmp, last) {
			extra, missing := diff(cmp, all), diff(all, cmp)
			t.Logf("verify %s: at %s still %d extra %v, %d missing %v", what, time.Since(start).Round(time.Second), len(extra), extra, len(missing), missing)
			last = cmp
		}
		time.Sleep(2 * time.Second)
	}
}

// waitNodeReadySince waits until node's kubelet has reported Ready after
// since (a restarted kubelet's first status may be NotReady).
func waitNodeReadySince(t *testing.T, ctx context.Context, cs *kubernetes.Clientset, node string, since time.Time) {
	t.Helper()
	start := time.Now()
	for {
		n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err == nil {
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && c.LastHeartbeatTime.After(since) {
					t.Logf("%s: kubelet reported Ready %s after the restart", node, time.Since(start).Round(time.Millisecond))
					return
				}
			}
		}
		if time.Since(start) > 3*time.Minute {
			t.Fatalf("%s: no Ready from its kubelet within 3 min of the restart (last error %v)", node, err)
		}
		time.Sleep(time.Second)
	}
}

// diff is the elements of a not in b.
func diff(a, b []string) []string {
	return slices.DeleteFunc(slices.Clone(a), func(c string) bool { return slices.Contains(b, c) })
}

// bedExplained are the checks the bed cannot pass, each for a reason of
// the bed: the kernel has no iSCSI modules (iscsid cannot run), the K3s
// stand-in has no Traefik, ServiceLB, local-path or Longhorn, the
// fixture no kube-prometheus-stack; the bed's disk is the machine's.
var bedExplained = []*regexp.Regexp{
	regexp.MustCompile(`^warn Hosts/(iscsid|module iscsi_tcp|module dm_crypt)/`),
	regexp.MustCompile(`^(fail|warn) Storage/(default class|longhorn)/cluster$`),
	regexp.MustCompile(`^fail Ingress/(traefik service/cluster|http/.*)$`),
	regexp.MustCompile(`^warn Secrets/grafana admin/`),
	regexp.MustCompile(`^warn etcd/write latency/`),
}

func explainedByBed(c string) bool {
	return slices.ContainsFunc(bedExplained, func(re *regexp.Regexp) bool { return re.MatchString(c) })
}

// setInotify sets the host kernel's inotify limits (the bed's nodes
// share them) and restores the old ones when the test ends.
func setInotify(t *testing.T, watches, instances int) {
	t.Helper()
	files := map[string]int{"/proc/sys/fs/inotify/max_user_watches": watches, "/proc/sys/fs/inotify/max_user_instances": instances}
	for f, v := range files {
		old, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(fmt.Sprint(v)), 0o644); err != nil {
			t.Skipf("cannot set %s: %v", f, err)
		}
		t.Cleanup(func() { _ = os.WriteFile(f, old, 0o644) })
	}
}

// productionVerifyE2E: verify on production-e2e as created, then each
// fault alone, found by its own check, and repaired.
func productionVerifyE2E(t *testing.T, ctx context.Context, v *verifier, dns *dnstest.Server, cs *kubernetes.Clientset, record string, ips []string) {
	t.Run("VerifyFindsEachFaultAlone", func(t *testing.T) {
		setInotify(t, verify.InotifyWatches, verify.InotifyInstances)
		// Baseline: everything ok but what the bed explains. The first
		// runs may still see Flux settling.
		var got []string
		var text string
		var took time.Duration
		deadline := time.Now().Add(2 * time.Minute)
		for {
			got, text, took = v.run(t, ctx)
			if !slices.ContainsFunc(got, func(c string) bool { return !explainedByBed(c) }) || time.Now().After(deadline) {
				break
			}
			time.Sleep(2 * time.Second)
		}
		for _, c := range got {
			if !explainedByBed(c) {
				t.Errorf("baseline: %s is not explained by the bed", c)
			}
		}
		v.baseline = got
		v.volatile = explainedByBed
		t.Logf("verify production-e2e as created: %s, %d checks not ok, each explained by the bed:\n%s", took.Round(time.Millisecond), len(got), text)
		if t.Failed() {
			t.FailNow()
		}
		var js bytes.Buffer
		start := time.Now()
		_ = commands.Verify(ctx, commands.Env{Stdout: &js, Stderr: &js, Output: commands.OutputText, Now: time.Now}, commands.ProfileArg{File: v.file}, v.opts)
		wall := time.Since(start)
		line := js.String()[strings.LastIndex(strings.TrimSpace(js.String()), "\n")+1:]
		t.Logf("verify wall time on 3 nodes: %s (goal ≤ 5 s); %s", wall.Round(time.Millisecond), strings.TrimSpace(line))
		if !regexp.MustCompile(`SSH connections/commands per host: \S+ 1/\d+ \S+ 1/\d+ \S+ 1/\d+$`).MatchString(strings.TrimSpace(line)) {
			t.Errorf("not one SSH connection per host: %q", line)
		}

		exec := func(node, script string) {
			t.Helper()
			if out, err := bed.Exec(ctx, node, "sh", "-c", script); err != nil {
				t.Fatalf("%s: %s: %v %s", node, script, err, out)
			}
		}
		// 1. K3s version drift: the stand-in reports another release.
		exec("kube-srv-2", "cp /usr/local/lib/k3s-standin/version /root/version.keep && echo v1.34.3+k3s1 > /usr/local/lib/k3s-standin/version")
		v.expect(t, ctx, "K3s version drift on kube-srv-2", time.Minute, "fail K3s/version/kube-srv-2")
		exec("kube-srv-2", "mv /root/version.keep /usr/local/lib/k3s-standin/version")
		v.expect(t, ctx, "after the version repair", time.Minute)

		// 2. config.yaml drift.
		exec("kube-srv-3", "cp /etc/rancher/k3s/config.yaml /root/config.keep && printf 'node-label:\\n  - drift=yes\\n' >> /etc/rancher/k3s/config.yaml")
		v.expect(t, ctx, "config.yaml drift on kube-srv-3", time.Minute, "fail K3s/config.yaml/kube-srv-3")
		exec("kube-srv-3", "mv /root/config.keep /etc/rancher/k3s/config.yaml")
		v.expect(t, ctx, "after the config.yaml repair", time.Minute)

		// 3. A stale Node (a machine retired without labctl).
		stale := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "kube-retired"}}
		if _, err := cs.CoreV1().Nodes().Create(ctx, stale, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		v.expect(t, ctx, "a stale Node", time.Minute, "fail Kubernetes/stale nodes/cluster")
		if err := cs.CoreV1().Nodes().Delete(ctx, "kube-retired", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		v.expect(t, ctx, "after the stale Node's removal", time.Minute)

		// 4. Certificates that expire in 10 days: the stand-in issues
		// short-lived ones at its next start.
		// A restarted K3s's kubelet may first report its Node NotReady:
		// each step waits for the new kubelet's Ready, so what verify
		// sees is the fault alone.
		restart := func(script string) {
			t.Helper()
			since := time.Now().Add(-time.Second)
			exec("kube-srv-1", script+" && systemctl restart k3s")
			waitNodeReadySince(t, ctx, cs, "kube-srv-1", since)
			v.fluxSettled(t, ctx)
		}
		restart("echo 240h > /usr/local/lib/k3s-standin/leaf-validity")
		v.expect(t, ctx, "certificates expiring in 10 days on kube-srv-1", 3*time.Minute, "fail K3s/certificates/kube-srv-1")
		restart("rm /usr/local/lib/k3s-standin/leaf-validity")
		v.expect(t, ctx, "after the certificates' renewal", 3*time.Minute)

		// 5. The Longhorn data path full.
		exec("kube-srv-2", "mount -t tmpfs -o size=4m tmpfs /var/lib/longhorn && dd if=/dev/zero of=/var/lib/longhorn/fill bs=64k count=64 2>/dev/null; true")
		v.expect(t, ctx, "a full data path on kube-srv-2", time.Minute, "fail Hosts/disk /var/lib/longhorn/kube-srv-2")
		exec("kube-srv-2", "umount /var/lib/longhorn")
		v.expect(t, ctx, "after the data path's repair", time.Minute)

		// 6. inotify limits at the kernel's defaults, as each node reads
		// them: the kernel's limits are one for every bed node and for
		// the scenario running in parallel (whose prerequisites raise
		// them), so each node gets files with the defaults bind-mounted
		// over its /proc/sys entries instead, and the kernel's stay.
		// The profile's tuning (spec.hosts.sysctl) names each setting,
		// the general check warns.
		const lower = "printf 8192 > /run/inotify-watches && printf 128 > /run/inotify-instances && mount --bind /run/inotify-watches /proc/sys/fs/inotify/max_user_watches && mount --bind /run/inotify-instances /proc/sys/fs/inotify/max_user_instances"
		const restore = "umount /proc/sys/fs/inotify/max_user_watches /proc/sys/fs/inotify/max_user_instances"
		var inotify []string
		for _, n := range []string{"kube-srv-1", "kube-srv-2", "kube-srv-3"} {
			exec(n, lower)
			t.Cleanup(func() { _, _ = bed.Exec(context.WithoutCancel(ctx), n, "sh", "-c", restore+" 2>/dev/null") })
			inotify = append(inotify, "warn Hosts/inotify limits/"+n, "fail Hosts/sysctl fs.inotify.max_user_watches/"+n, "fail Hosts/sysctl fs.inotify.max_user_instances/"+n)
		}
		v.expect(t, ctx, "inotify limits at the kernel's defaults", time.Minute, inotify...)
		for _, n := range []string{"kube-srv-1", "kube-srv-2", "kube-srv-3"} {
			exec(n, restore)
		}
		v.expect(t, ctx, "after raising inotify", time.Minute)

		// 7. A DNS record still pointing at a retired machine.
		dns.Set(record, ips[0], ips[1], "172.30.20.99")
		v.expect(t, ctx, "a DNS record pointing elsewhere", time.Minute, "fail DNS/record/"+record)
		dns.Set(record, ips...)
		v.expect(t, ctx, "after the DNS repair", time.Minute)
	})
}

// memberRemovedE2E: kube-srv-3's etcd member is removed behind labctl's
// back; verify names it. What follows from it on kube-srv-3 (its K3s,
// its Node) may fail too; nothing else.
func memberRemovedE2E(t *testing.T, ctx context.Context, v *verifier) {
	t.Run("VerifyFindsARemovedMember", func(t *testing.T) {
		setInotify(t, verify.InotifyWatches, verify.InotifyInstances)
		v.fluxSettled(t, ctx)
		v.expect(t, ctx, "baseline after the restore", 3*time.Minute)
		if t.Failed() {
			return
		}
		list, err := bed.Exec(ctx, "kube-srv-1", "sh", "-c", etcdCurl+" https://127.0.0.1:2379/v3/cluster/member/list -d '{}'")
		if err != nil {
			t.Fatal(err)
		}
		var ml struct {
			Members []struct {
				ID       string   `json:"ID"`
				PeerURLs []string `json:"peerURLs"`
			} `json:"members"`
		}
		if err := json.Unmarshal([]byte(list), &ml); err != nil {
			t.Fatal(err)
		}
		id := ""
		for _, m := range ml.Members {
			if slices.Contains(m.PeerURLs, "https://172.30.20.63:2380") {
				id = m.ID
			}
		}
		if id == "" {
			t.Fatalf("no member of kube-srv-3 in %s", list)
		}
		if out, err := bed.Exec(ctx, "kube-srv-1", "sh", "-c", fmt.Sprintf(etcdCurl+` https://127.0.0.1:2379/v3/cluster/member/remove -d '{"ID":"%s"}'`, id)); err != nil {
			t.Fatalf("member remove: %v %s", err, out)
		}
		consequence := regexp.MustCompile(`^(fail|warn) (etcd/failure margin/cluster|K3s/service/kube-srv-3|Kubernetes/node/kube-srv-3|etcd/(data|write latency)/kube-srv-3)$`)
		deadline := time.Now().Add(time.Minute)
		for {
			got, text, _ := v.run(t, ctx)
			found := slices.Contains(got, "fail etcd/members/cluster") && strings.Contains(text, "no member for kube-srv-3")
			var other []string
			for _, c := range got {
				if c != "fail etcd/members/cluster" && len(v.settled([]string{c}, nil)) == 1 && !slices.Contains(v.baseline, c) && !consequence.MatchString(c) {
					other = append(other, c)
				}
			}
			if found && len(other) == 0 {
				t.Logf("verify a removed member: found\n%s", text)
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("a removed member: not ok %v (unexpected: %v)\n%s", got, other, text)
				break
			}
			time.Sleep(2 * time.Second)
		}
	})
}

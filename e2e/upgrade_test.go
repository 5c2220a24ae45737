//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/labctl/labctl/commands"
	"github.com/labctl/labctl/e2e/testbed"
	"github.com/labctl/labctl/flow"
	"github.com/labctl/labctl/plan"
)

// versions is each node's `k3s --version`, read on the node.
func versions(t *testing.T, ctx context.Context, s servers) []string {
	t.Helper()
	var out []string
	for _, n := range s.names {
		v, err := bed.Exec(ctx, n, "sh", "-c", "k3s --version | head -n 1 | cut -d' ' -f3")
		if err != nil {
			t.Fatalf("%s: k3s --version: %v", n, err)
		}
		out = append(out, n+"="+v)
	}
	return out
}

// upgradeE2E runs the upgrade scenarios on the production-e2e cluster
// and returns the profile that now describes it (with the extra tls-san).
func upgradeE2E(t *testing.T, ctx context.Context, s servers, file, kc, state, labctl string, env map[string]string) string {
	text, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	variant := func(from, to string) string {
		f := filepath.Join(filepath.Dir(file), fmt.Sprintf("upgrade-%d.yaml", time.Now().UnixNano()))
		if err := os.WriteFile(f, []byte(strings.Replace(string(text), from, to, 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	upgrade := func(f string, drain time.Duration) (string, []plan.Event, error) {
		var out bytes.Buffer
		rec := &plan.Recorder{}
		e := commands.Env{Stdout: &out, Stderr: &out, Output: commands.OutputText, Now: time.Now, Events: rec}
		err := commands.Upgrade(ctx, e, commands.ProfileArg{File: f}, commands.UpgradeOptions{Yes: true, StateDir: state, DrainTimeout: drain})
		return out.String(), rec.Events(), err
	}
	newer := variant("version: v1.34.4+k3s1", "version: v1.34.5+k3s1")

	t.Run("UpgradeRefusals", func(t *testing.T) {
		before := versions(t, ctx, s)
		for _, c := range []struct{ name, to, want string }{
			{"downgrade", "v1.34.3+k3s1", "v1.34.4+k3s1 runs, the profile asks v1.34.3+k3s1: a downgrade"},
			{"minor skip", "v1.36.0+k3s1", "that skips 1 minor release(s); upgrade through v1.35 first"},
		} {
			out, events, err := upgrade(variant("version: v1.34.4+k3s1", "version: "+c.to), time.Minute)
			if !errors.Is(err, flow.ErrUpgradeRefused) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: %v\n%s", c.name, err, out)
			}
			if ch := changesOn(events); len(ch) != 0 {
				t.Errorf("%s refused, yet changes: %v", c.name, ch)
			}
		}
		// A pod on kube-srv-1 that a PodDisruptionBudget protects: the
		// drain is refused, reported by name, and nothing is upgraded.
		cs := s.client(t, 1)
		labels := map[string]string{"app": "pdb-e2e"}
		one := int32(1)
		dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "pdb-e2e", Namespace: "default"}, Spec: appsv1.DeploymentSpec{
			Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				NodeSelector: map[string]string{"kubernetes.io/hostname": "kube-srv-1"},
				Containers:   []corev1.Container{{Name: "pause", Image: testbed.PauseImage, ImagePullPolicy: corev1.PullNever}},
			}},
		}}
		if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "pdb-e2e", Namespace: "default"}, Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: &intstr.IntOrString{Type: intstr.Int, IntVal: 1}, Selector: &metav1.LabelSelector{MatchLabels: labels},
		}}
		if _, err := cs.PolicyV1().PodDisruptionBudgets("default").Create(ctx, pdb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitPodRunning(t, ctx, s, "app=pdb-e2e")
		out, _, err := upgrade(newer, 15*time.Second)
		t.Logf("upgrade with a PodDisruptionBudget in the way: %v\n%s", err, out)
		if err == nil || !strings.Contains(err.Error(), "refused by its PodDisruptionBudget: pdb-e2e (0 disruptions allowed)") || !strings.Contains(err.Error(), "default/pdb-e2e-") {
			t.Errorf("blocked drain: %v", err)
		}
		if after := versions(t, ctx, s); !slices.Equal(after, before) {
			t.Errorf("a refused upgrade changed versions: %v → %v", before, after)
		}
		if n, err := cs.CoreV1().Nodes().Get(ctx, "kube-srv-1", metav1.GetOptions{}); err != nil || n.Spec.Unschedulable {
			t.Errorf("kube-srv-1 left cordoned after the refused drain: %v", err)
		}
		if err := cs.PolicyV1().PodDisruptionBudgets("default").Delete(ctx, "pdb-e2e", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("UpgradeKilledAfterFirstServer", func(t *testing.T) {
		pattern := filepath.Join(state, "production-e2e", "snapshots", "labctl-pre-upgrade-v1.34.5-k3s1-*[0-9]")
		earlier, _ := filepath.Glob(pattern) // the refused attempts' (each took one before its first change)
		p := pollAPI(t, s, 0, 1, 2)
		start := time.Now()
		killed, first := runLabctlJSON(t, ctx, labctl, env, "upgrade/kube-srv-1", "upgrade", "-f", newer, "--yes", "--state-dir", state)
		if !killed {
			t.Fatalf("the upgrade ended before kube-srv-1 was done: %+v", doneEvent(first))
		}
		t.Logf("killed labctl upgrade (SIGKILL) after upgrade/kube-srv-1; versions %v", versions(t, ctx, s))
		_, second := runLabctlJSON(t, ctx, labctl, env, "", "upgrade", "-f", newer, "--yes", "--state-dir", state)
		took := time.Since(start)
		avail, samples := p.result()
		if d := doneEvent(second); d.Error != "" {
			t.Fatalf("upgrade re-run: %s", d.Error)
		}
		var order []string
		for _, evs := range [][]plan.Event{first, second} {
			for _, e := range evs {
				if e.Kind == plan.KindStepDone && !e.DryRun && strings.HasPrefix(e.Step, "upgrade/") && e.Status == plan.StatusDone {
					order = append(order, fmt.Sprintf("%s %s (%s)", e.Time.Format("15:04:05"), strings.TrimPrefix(e.Step, "upgrade/"), e.Elapsed.Round(time.Second)))
				}
			}
		}
		t.Logf("upgrade v1.34.4 → v1.34.5, killed once: %s in all; servers done one at a time: %v; API through the three servers: %.1f%% (%s)", took.Round(time.Millisecond), order, 100*avail, samples)
		if len(order) != 3 || !strings.Contains(order[0], "kube-srv-1") || !strings.Contains(order[1], "kube-srv-2") || !strings.Contains(order[2], "kube-srv-3") {
			t.Errorf("upgrade order %v", order)
		}
		if avail < 0.95 {
			t.Errorf("the API answered %.1f%% of the time during the upgrade", 100*avail)
		}
		if v := versions(t, ctx, s); strings.Join(v, ",") != "kube-srv-1=v1.34.5+k3s1,kube-srv-2=v1.34.5+k3s1,kube-srv-3=v1.34.5+k3s1" {
			t.Errorf("versions after the upgrade: %v", v)
		}
		snaps, _ := filepath.Glob(pattern)
		var files []string
		for _, f := range snaps {
			if !slices.Contains(earlier, f) {
				files = append(files, f)
			}
		}
		if len(files) != 1 {
			t.Errorf("pre-upgrade snapshots %v, want one (taken before the first change, not again on the re-run)", files)
		}
		out, events, err := upgrade(newer, time.Minute)
		if err != nil || len(changesOn(events)) != 0 {
			t.Errorf("the upgrade again: %v, changes %v\n%s", err, changesOn(events), out)
		}
		waitPodRunning(t, ctx, s, "app=pdb-e2e")
	})

	// An extra tls-san (a DNS record pointing at a server) is a config
	// change: written and K3s restarted, one server at a time.
	withSAN := filepath.Join(filepath.Dir(file), "with-san.yaml")
	sanText := strings.Replace(strings.Replace(string(text), "version: v1.34.4+k3s1", "version: v1.34.5+k3s1", 1),
		"    records:\n", "    records:\n      - {name: "+apiRecord+", targets: [172.30.20.61]}\n", 1)
	if !strings.Contains(sanText, apiRecord) {
		t.Fatalf("no dns.records in %s to add %s to", file, apiRecord)
	}
	if err := os.WriteFile(withSAN, []byte(sanText), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Run("UpgradeConfigChange", func(t *testing.T) {
		start := time.Now()
		out, events, err := upgrade(withSAN, time.Minute)
		t.Logf("config.yaml change rolled out (%s):\n%s", time.Since(start).Round(time.Millisecond), out)
		if err != nil {
			t.Fatal(err)
		}
		var restarts []string
		for _, e := range events {
			if e.Kind == plan.KindChange && strings.HasPrefix(e.Message, "restart k3s") {
				restarts = append(restarts, e.Host)
			}
		}
		if strings.Join(restarts, ",") != "kube-srv-1,kube-srv-2,kube-srv-3" {
			t.Errorf("restarts %v, want the three servers in order", restarts)
		}
		for _, n := range s.names {
			if cfg, _ := bed.Exec(ctx, n, "cat", "/etc/rancher/k3s/config.yaml"); !strings.Contains(cfg, apiRecord) {
				t.Errorf("%s's config.yaml lacks the new tls-san:\n%s", n, cfg)
			}
		}
	})
	return withSAN
}

// waitPodRunning waits for a Running pod with the label selector.
func waitPodRunning(t *testing.T, ctx context.Context, s servers, selector string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		for i := range s.names {
			pods, err := s.client(t, i).CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: selector})
			if err == nil {
				for _, p := range pods.Items {
					if p.Status.Phase == corev1.PodRunning {
						return
					}
				}
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Running pod %s after 2m", selector)
		}
		time.Sleep(time.Second)
	}
}

// apiRecord is the DNS record the config-change upgrade adds, so that
// K3s gets it as a tls-san.
const apiRecord = "api.e2e.labctl.test"

// restoreE2E: ConfigMap A is there (written before the rebuilds), a
// snapshot is saved, ConfigMap B written, K3s stopped on two servers
// (quorum lost: the rebuild refuses) and the snapshot restored: A is
// there, B is not, three started members, three Ready Nodes.
func restoreE2E(t *testing.T, ctx context.Context, s servers, file, kc, state string, px commands.ProxmoxOptions) {
	t.Run("RestoreAfterQuorumLoss", func(t *testing.T) {
		var out bytes.Buffer
		e := commands.Env{Stdout: &out, Stderr: &out, Output: commands.OutputText, Now: time.Now}
		if err := commands.SnapshotSave(ctx, e, commands.ProfileArg{File: file}, commands.SnapshotOptions{StateDir: state, Reason: "before ConfigMap B"}); err != nil {
			t.Fatalf("snapshot save: %v\n%s", err, out.String())
		}
		metas, _ := filepath.Glob(filepath.Join(state, "production-e2e", "snapshots", "labctl-manual-*.json"))
		if len(metas) != 1 {
			t.Fatalf("manual snapshots: %v", metas)
		}
		snapshot := strings.TrimSuffix(filepath.Base(metas[0]), ".json")
		out.Reset()
		if err := commands.SnapshotList(ctx, e, commands.ProfileArg{File: file}, commands.SnapshotOptions{StateDir: state}); err != nil || !strings.Contains(out.String(), snapshot) || !strings.Contains(out.String(), "before ConfigMap B") {
			t.Errorf("snapshot list: %v\n%s", err, out.String())
		}
		t.Logf("labctl snapshot list:\n%s", out.String())
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "after-snapshot", Namespace: "default"}, Data: map[string]string{"b": "written after the snapshot"}}
		if _, err := s.client(t, 0).CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		before := nodeState(t, ctx, []string{"kube-srv-1"})
		for _, n := range []string{"kube-srv-2", "kube-srv-3"} {
			if _, err := bed.Exec(ctx, n, "systemctl", "stop", "k3s"); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(3 * time.Second) // etcd's election timeout: the survivor loses its leader
		out.Reset()
		rec := &plan.Recorder{}
		re := commands.Env{Stdout: &out, Stderr: &out, Output: commands.OutputText, Now: time.Now, Events: rec}
		err := commands.Rebuild(ctx, re, commands.ProfileArg{File: file}, commands.RebuildOptions{Node: "kube-srv-2", Yes: true, Kubeconfig: kc, StateDir: state, Proxmox: px})
		t.Logf("rebuild kube-srv-2 with two servers down: %v", err)
		if !errors.Is(err, flow.ErrQuorum) {
			t.Fatalf("err = %v", err)
		}
		for _, want := range []string{"1 of 3 members answer", "kube-srv-2-", "kube-srv-3-", "not answering", "labctl restore production-e2e --snapshot"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("the refusal lacks %q", want)
			}
		}
		if c := changesOn(rec.Events()); len(c) != 0 {
			t.Errorf("the refused rebuild made changes: %v", c)
		}
		if after := nodeState(t, ctx, []string{"kube-srv-1"}); after != before {
			t.Errorf("the refused rebuild changed kube-srv-1:\nbefore %s\nafter  %s", before, after)
		}

		out.Reset()
		start := time.Now()
		err = commands.Restore(ctx, e, commands.ProfileArg{File: file}, commands.RestoreOptions{Snapshot: snapshot, Yes: true, Kubeconfig: kc, StateDir: state})
		took := time.Since(start)
		t.Logf("restore %s (%s):\n%s", snapshot, took.Round(time.Millisecond), out.String())
		if err != nil {
			t.Fatal(err)
		}
		cs := s.client(t, 0)
		if _, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "rebuild-e2e", metav1.GetOptions{}); err != nil {
			t.Errorf("ConfigMap A (before the snapshot) after the restore: %v", err)
		}
		if _, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "after-snapshot", metav1.GetOptions{}); err == nil {
			t.Error("ConfigMap B (after the snapshot) survived the restore")
		}
		n, learners, _ := etcdMembers(t, ctx, "kube-srv-1")
		// The restored Nodes carry the snapshot's leases: the node
		// controller may mark one NotReady until its kubelet renews.
		ready := readyServers(t, ctx, cs)
		for wait := time.Now(); strings.Join(ready, ",") != "kube-srv-1,kube-srv-2,kube-srv-3" && time.Since(wait) < 2*time.Minute; ready = readyServers(t, ctx, cs) {
			t.Logf("after the restore: Ready %v, waiting", ready)
			time.Sleep(2 * time.Second)
		}
		if n != 3 || learners != 0 || strings.Join(ready, ",") != "kube-srv-1,kube-srv-2,kube-srv-3" {
			t.Errorf("after the restore: %d started members, %d learners, Ready %v", n, learners, ready)
		}
		t.Logf("restore: %s; %d started members, Ready %v", took.Round(time.Millisecond), n, ready)
	})
}

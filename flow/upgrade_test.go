package flow

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/profiles"
)

func runUpgrade(t *testing.T, c *cluster, l *profiles.Loaded) (*plan.Report, error) {
	t.Helper()
	p, err := Upgrade(&l.Profile, c.backends(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	return plan.Run(context.Background(), p, plan.Options{})
}

// calls lists the calls of the given verbs, in order.
func (c *cluster) callsOf(verbs ...string) []string {
	var out []string
	for _, call := range c.calls {
		if slices.Contains(verbs, strings.Fields(call)[0]) {
			out = append(out, call)
		}
	}
	return out
}

// A patch release is rolled out with a snapshot first, then server by
// server: cordon, drain, config, install, uncordon; the re-run changes
// nothing.
func TestUpgradeRollsServersOneAtATimeAfterASnapshot(t *testing.T) {
	c, l := newCluster(t)
	l.Spec.K3s.Version = "v1.33.5+k3s1"
	if _, err := runUpgrade(t, c, l); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.calls[0], "SaveSnapshot labctl-pre-upgrade-v1.33.5-k3s1-") {
		t.Errorf("first change %q, want the snapshot", c.calls[0])
	}
	var want []string
	for _, n := range []string{"kube-srv-1", "kube-srv-2", "kube-srv-3"} {
		want = append(want, "Cordon "+n, "Drain "+n, "Install "+n, "Uncordon "+n)
	}
	if got := c.callsOf("Cordon", "Drain", "Install", "Uncordon"); !slices.Equal(got, want) {
		t.Fatalf("upgrade order\n got %v\nwant %v", got, want)
	}
	before := len(c.calls)
	rep, err := runUpgrade(t, c, l)
	if err != nil || rep.Changes() != 0 || len(c.calls) != before {
		t.Fatalf("re-run: %d changes, %v, calls %v", rep.Changes(), err, c.calls[before:])
	}
}

// A changed config.yaml (an extra tls-san) is written and K3s restarted,
// one server at a time, without a reinstall.
func TestUpgradeRollsAConfigChangeByRestarting(t *testing.T) {
	c, l := newCluster(t)
	l.Spec.DNS.Records = append(l.Spec.DNS.Records, profiles.DNSRecord{Name: "api.ronaldlokers.nl", Targets: []string{"10.0.40.101"}})
	// The cluster observes the new config once written.
	c.rendered = true
	if _, err := runUpgrade(t, c, l); err != nil {
		t.Fatal(err)
	}
	if got := c.callsOf("Install"); len(got) != 0 {
		t.Errorf("a config change reinstalled: %v", got)
	}
	if got := c.callsOf("Restart"); !slices.Equal(got, []string{"Restart kube-srv-1", "Restart kube-srv-2", "Restart kube-srv-3"}) {
		t.Errorf("restarts %v", got)
	}
}

// Refused before any change, naming both versions: a downgrade, a
// skipped minor release, a setting every server must share.
func TestUpgradeRefusesDowngradeMinorSkipAndCriticalSettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*profiles.Spec)
		want string
	}{
		{"downgrade", func(s *profiles.Spec) { s.K3s.Version = "v1.33.3+k3s1" }, "v1.33.4+k3s1 runs, the profile asks v1.33.3+k3s1: a downgrade"},
		{"minor skip", func(s *profiles.Spec) { s.K3s.Version = "v1.35.0+k3s1" }, "that skips 1 minor release(s); upgrade through v1.34 first"},
		{"cluster CIDR", func(s *profiles.Spec) { s.K3s.ClusterCIDR = "10.52.0.0/16" }, "config.yaml cluster-cidr 10.42.0.0/16 → 10.52.0.0/16: every server must share it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, l := newCluster(t)
			tc.set(&l.Spec)
			_, err := runUpgrade(t, c, l)
			if !errors.Is(err, ErrUpgradeRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v", err)
			}
			if len(c.calls) != 0 {
				t.Errorf("refused, yet %v", c.calls)
			}
		})
	}
}

// A restore with one server gone: K3s stopped where it answers, the
// local snapshot uploaded and restored on the first server that
// answers, the other rejoined through it; the dead one left out.
func TestRestoreResetsOneServerAndRejoinsTheOthersThroughIt(t *testing.T) {
	c, l := newCluster(t)
	c.unreachable = map[string]bool{"kube-srv-3": true}
	file := filepath.Join(t.TempDir(), "labctl-manual-1")
	if err := os.WriteFile(file, []byte("snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Restore(&l.Profile, file, c.backends(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plan.Run(context.Background(), p, plan.Options{}); err != nil {
		t.Fatal(err)
	}
	want := []string{"Stop kube-srv-1", "Stop kube-srv-2", "UploadSnapshot " + file + " to kube-srv-1", "ClusterReset kube-srv-1 /srv/" + file, "Start kube-srv-1",
		"MoveServerDB kube-srv-2", "WriteConfig kube-srv-2 join kube-srv-1", "Start kube-srv-2"}
	got := c.callsOf("Stop", "UploadSnapshot", "ClusterReset", "Start", "MoveServerDB", "WriteConfig")
	slices.Sort(got[:2])
	if !slices.Equal(got, want) {
		t.Fatalf("restore calls\n got %v\nwant %v", got, want)
	}
	for _, call := range c.calls {
		if strings.Contains(call, "kube-srv-3") {
			t.Errorf("the dead server was touched: %s", call)
		}
	}
	if _, ok := c.facts(); ok {
		t.Error("restore journal left")
	}
}

// The restore's dry run, with quorum lost (the API answers nothing): the
// Nodes to clean are known only after the restore, so the dry run plans
// it instead of failing on today's API.
func TestRestoreDryRunWithTheAPIDown(t *testing.T) {
	c, l := newCluster(t)
	c.apiDown = true
	file := filepath.Join(t.TempDir(), "labctl-manual-1")
	if err := os.WriteFile(file, []byte("snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Restore(&l.Profile, file, c.backends(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := plan.Run(context.Background(), p, plan.Options{DryRun: true})
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	for _, st := range rep.Steps {
		if st.ID == "clean-nodes" && (st.Status != plan.StatusDone || !strings.Contains(st.Reason, "once the snapshot is restored")) {
			t.Errorf("clean-nodes: %s %q", st.Status, st.Reason)
		}
	}
	if len(c.callsOf("Stop", "ClusterReset", "Start")) != 0 {
		t.Errorf("the dry run changed something: %v", c.calls)
	}
}

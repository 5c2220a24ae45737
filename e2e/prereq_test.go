//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/commands"
	"github.com/labctl/labctl/flow"
	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/nodes"
	"github.com/labctl/labctl/provision/prereq"
	"github.com/labctl/labctl/provision/remote"
)

// e2eProfile writes a production-shaped profile whose three nodes are bed
// containers (no Proxmox: the hosts are given).
func e2eProfile(t *testing.T, ips []string) string { return e2eProfileAs(t, ips, "root") }

func e2eProfileAs(t *testing.T, ips []string, user string) string {
	return e2eProfileRoles(t, ips, user, len(ips))
}

// e2eProfileRoles writes the profile with the first servers nodes as
// servers and the rest as agents.
func e2eProfileRoles(t *testing.T, ips []string, user string, servers int) string {
	t.Helper()
	var nodesYAML strings.Builder
	for i, ip := range ips {
		role := "server"
		if i >= servers {
			role = "agent"
		}
		fmt.Fprintf(&nodesYAML, "    - {name: node-%d, address: %s, role: %s}\n", i+1, ip, role)
	}
	text := fmt.Sprintf(`apiVersion: labctl.dev/v1alpha1
kind: Profile
metadata: {name: production-e2e}
extends: production
spec:
  network: {subnet: 172.30.20.0/24, gateway: 172.30.20.1, nameservers: [172.30.20.1]}
  nodes:
%s  ssh: {user: %s, port: 22, identityFiles: [%s], knownHostsFile: %s}
  proxmox: null
`, nodesYAML.String(), user, bed.KeyFile, knownHosts(t))
	p := filepath.Join(t.TempDir(), "production-e2e.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func preflight(t *testing.T, file string) ([]commands.HostReport, error) {
	t.Helper()
	var out bytes.Buffer
	err := commands.Preflight(context.Background(), commands.Env{Stdout: &out, Stderr: os.Stderr, Output: commands.OutputJSON}, commands.ProfileArg{File: file}, commands.PreflightOptions{})
	var reps []commands.HostReport
	if jerr := json.Unmarshal(out.Bytes(), &reps); jerr != nil {
		t.Fatalf("preflight JSON: %v: %s", jerr, out.String())
	}
	return reps, err
}

func status(r commands.HostReport, item string) prereq.Status {
	for _, f := range r.Findings {
		if f.Item == item {
			return f.Status
		}
	}
	return ""
}

// prerequisitesConvergeAndSecondRunChangesNothing: preflight on fresh
// nodes reports what is missing; the prepare flow over real SSH installs
// it (one node also has multipath-tools, which gets the blacklist); what
// the kernel cannot provide becomes a warning with its cause; a second run
// makes zero changes; preflight then reports only the kernel's limits.
func prerequisitesConvergeAndSecondRunChangesNothing(t *testing.T) {
	ctx := context.Background()
	ips := []string{"172.30.20.21", "172.30.20.22", "172.30.20.23"}
	for i, ip := range ips {
		n, err := bed.StartNode(ctx, fmt.Sprintf("node-%d", i+1), ip)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = bed.RemoveNode(ctx, n.Name) }()
	}
	if out, err := bed.Exec(ctx, "node-3", "sh", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq multipath-tools >/dev/null && command -v multipathd"); err != nil {
		t.Fatalf("install multipath-tools on node-3: %v %s", err, out)
	}
	file := e2eProfile(t, ips)

	reps, err := preflight(t, file)
	if !errors.Is(err, commands.ErrNotReady) || len(reps) != 3 {
		t.Fatalf("preflight on fresh nodes: %v %+v", err, reps)
	}
	for _, r := range reps {
		if status(r, "package open-iscsi") != prereq.Missing || status(r, "data path") != prereq.Missing || status(r, "journald") != prereq.Missing || status(r, "sysctl fs.inotify.max_user_watches") != prereq.Missing {
			t.Errorf("%s: fresh node not reported missing: %+v", r.Host, r.Findings)
		}
	}
	if status(reps[2], "multipath blacklist") != prereq.Missing || status(reps[0], "multipath blacklist") != prereq.OK {
		t.Errorf("multipath: node-1 %s, node-3 %s", status(reps[0], "multipath blacklist"), status(reps[2], "multipath blacklist"))
	}

	l, err := profiles.Loader{}.LoadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	run := func() (*plan.Report, []plan.Event, *remote.Pool) {
		pool := remote.NewPool(nil)
		b := &nodes.Backend{Pool: pool, SSH: l.Spec.SSH, Spec: &l.Spec}
		p, err := flow.Prepare(&l.Profile, flow.Backends{Hosts: b}, flow.Options{})
		if err != nil {
			t.Fatal(err)
		}
		rec := &plan.Recorder{}
		var progress bytes.Buffer
		start := time.Now()
		rep, err := plan.Run(ctx, p, plan.Options{Sink: plan.Sinks{rec, plan.NewProgress(&progress)}})
		t.Logf("prepare run in %s:\n%s", time.Since(start).Round(time.Millisecond), progress.String())
		if err != nil {
			t.Fatal(err)
		}
		return rep, rec.Events(), pool
	}

	first, events, pool := run()
	if first.Changes() == 0 {
		t.Fatal("first run changed nothing")
	}
	countWarnings := func(events []plan.Event) int {
		n := 0
		for _, e := range events {
			if e.Kind == plan.KindLog && strings.Contains(e.Message, "warning:") && strings.Contains(e.Message, "cannot load modules") {
				n++
			}
		}
		return n
	}
	// iscsid, iscsi_tcp and dm_crypt on each of the 3 nodes.
	if w := countWarnings(events); w != 9 {
		t.Errorf("%d kernel warnings in the first run, want 9 (3 per node)", w)
	}
	for host, n := range pool.Connections() {
		if n != 1 {
			t.Errorf("%s: %d SSH connections in one run, want 1", host, n)
		}
	}
	pool.Close()

	second, events, pool := run()
	pool.Close()
	if w := countWarnings(events); w != 9 {
		t.Errorf("%d kernel warnings in the second run, want 9: a no-op run still says what Longhorn lacks", w)
	}
	if second.Changes() != 0 {
		t.Fatalf("second run made %d changes", second.Changes())
	}
	for _, e := range events {
		if e.Kind == plan.KindChange {
			t.Errorf("second run change event: %+v", e)
		}
	}
	t.Logf("first run: %d changes in %s; second run: 0 changes in %s", first.Changes(), first.Wall().Round(time.Millisecond), second.Wall().Round(time.Millisecond))

	reps, err = preflight(t, file)
	if !errors.Is(err, commands.ErrNotReady) || !strings.Contains(err.Error(), "0 missing") {
		t.Fatalf("preflight after prepare: %v", err)
	}
	for _, r := range reps {
		for _, f := range r.Findings {
			if f.Status == prereq.Missing {
				t.Errorf("%s: %s still missing: %s", r.Host, f.Item, f.Detail)
			}
			if f.Status == prereq.Warn && !strings.Contains(f.Detail, "cannot load modules") {
				t.Errorf("%s: warning without the kernel's cause: %+v", r.Host, f)
			}
		}
	}
	if status(reps[2], "multipath blacklist") != prereq.OK {
		t.Error("node-3 multipath blacklist not in place")
	}
	// The production profile's tuning: inotify limits live (the kernel's
	// are the host's, shared by the bed's nodes) and persisted in the
	// drop-in systemd-sysctl reads at boot; journald on disk.
	for _, n := range []string{"node-1", "node-2", "node-3"} {
		got, err := bed.Exec(ctx, n, "sh", "-c", "cat /proc/sys/fs/inotify/max_user_watches /proc/sys/fs/inotify/max_user_instances; grep -c '^fs.inotify' "+prereq.SysctlFile+"; grep -h '^Storage=\\|^SystemMaxUse=' "+prereq.JournaldFile+"; ls /var/log/journal/*/system.journal | wc -l; journalctl --header -q 2>/dev/null | grep -c 'File path: /var/log/journal' || true")
		if err != nil || !strings.HasPrefix(got, "524288\n512\n2\nStorage=persistent\nSystemMaxUse=1G\n1\n") {
			t.Errorf("%s tuning: %q %v", n, got, err)
		}
		t.Logf("%s tuning: %q", n, got)
	}
	conf, _ := bed.Exec(ctx, "node-3", "cat", "/etc/multipath.conf")
	if !strings.Contains(conf, prereq.BlacklistLine) {
		t.Errorf("multipath.conf = %q", conf)
	}
}

package prereq

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/labctl/labctl/internal/golden"
	"github.com/labctl/labctl/profiles"
)

// local runs commands on this machine, so the gather script is exercised
// by a real shell, dpkg and systemctl rather than a fake.
func local(ctx context.Context, script string, _ bool) (string, error) {
	out, err := exec.CommandContext(ctx, "sh", "-c", script).Output()
	return strings.TrimSpace(string(out)), err
}

func TestGatherReadsEveryFactOnARealDebianHost(t *testing.T) {
	f, err := Gather(context.Background(), local, lh)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"os", "kernel", "modules.loadable", "pkg.open-iscsi", "mod.iscsi_tcp", "mod.dm_crypt", "iscsid.enabled", "iscsid.active", "modules.persisted", "multipath.installed", "multipath.blacklisted", "datapath"} {
		if _, ok := f[k]; !ok {
			t.Errorf("fact %s missing from %v", k, f)
		}
	}
	if !strings.HasPrefix(f["os"], "debian ") {
		t.Errorf("os = %q", f["os"])
	}
	if got := len(Assess(f, lh)); got != 11 {
		t.Errorf("%d findings, want 11", got)
	}
}

var (
	lh    = Want{Longhorn: true, DataPath: "/var/lib/longhorn"}
	fresh = Facts{"os": "debian 12", "kernel": "6.1.0-18-amd64", "modules.loadable": "yes", "mod.iscsi_tcp": "absent", "mod.dm_crypt": "absent",
		"multipath.installed": "yes", "multipath.blacklisted": "no", "datapath": "no"}
	ready = Facts{"os": "debian 12", "kernel": "6.1.0-18-amd64", "modules.loadable": "yes",
		"pkg.open-iscsi": "install ok installed", "pkg.nfs-common": "install ok installed", "pkg.cryptsetup": "install ok installed", "pkg.dmsetup": "install ok installed",
		"mod.iscsi_tcp": "loaded", "mod.dm_crypt": "loaded", "iscsid.enabled": "enabled", "iscsid.active": "active",
		"modules.persisted": "iscsi_tcp dm_crypt", "multipath.installed": "yes", "multipath.blacklisted": "yes", "datapath": "yes"}
	// A container or a kernel without module support: packages installed,
	// but iSCSI and dm_crypt cannot exist.
	noModules = Facts{"os": "debian 12", "kernel": "6.18.44-fc", "modules.loadable": "no",
		"pkg.open-iscsi": "install ok installed", "pkg.nfs-common": "install ok installed", "pkg.cryptsetup": "install ok installed", "pkg.dmsetup": "install ok installed",
		"mod.iscsi_tcp": "absent", "mod.dm_crypt": "absent", "iscsid.enabled": "enabled", "iscsid.active": "failed",
		"modules.persisted": "iscsi_tcp dm_crypt", "multipath.installed": "no", "multipath.blacklisted": "no", "datapath": "yes"}
)

func TestAssessAndFixesPerHostState(t *testing.T) {
	var b strings.Builder
	for _, tc := range []struct {
		name  string
		facts Facts
	}{{"fresh", fresh}, {"ready", ready}, {"no-modules", noModules}, {"unobserved", nil}} {
		fmt.Fprintf(&b, "## %s\n", tc.name)
		if tc.facts != nil {
			for _, f := range Assess(tc.facts, lh) {
				fmt.Fprintf(&b, "%-20s %-7s %s\n", f.Item, f.Status, f.Detail)
			}
		}
		for _, fx := range Fixes(tc.facts, lh) {
			fmt.Fprintf(&b, "fix: %s (kernel-limited=%v)\n", fx.Desc, fx.KernelLimited)
		}
	}
	golden.Assert(t, "testdata/assess.txt", []byte(b.String()))
	if n := len(Fixes(ready, lh)); n != 0 {
		t.Errorf("a ready host gets %d fixes", n)
	}
	if n := len(Fixes(noModules, lh)); n != 0 {
		t.Errorf("kernel limits are warnings, not fixes: got %d fixes", n)
	}
}

func failing(context.Context, string, bool) (string, error) {
	return "", errors.New("modprobe: FATAL: Module iscsi_tcp not found")
}

func TestKernelLimitedFixFailureIsAWarningWithTheCause(t *testing.T) {
	f := Facts{"kernel": "6.18.44-fc", "modules.loadable": "no", "mod.iscsi_tcp": "absent"}
	err := Apply(context.Background(), failing, f, Fix{Item: "module iscsi_tcp", Desc: "load kernel module iscsi_tcp", Script: "modprobe iscsi_tcp", KernelLimited: true})
	var kw *KernelWarning
	if !errors.As(err, &kw) || !strings.Contains(err.Error(), "cannot load modules (/lib/modules/6.18.44-fc is absent)") {
		t.Fatalf("err = %v", err)
	}
	err = Apply(context.Background(), failing, f, Fix{Item: "data path", Desc: "create the Longhorn data path", Script: "mkdir -p x"})
	if errors.As(err, &kw) || err == nil {
		t.Fatalf("an ordinary failure must stay an error: %v", err)
	}
}

var tuned = Want{Longhorn: true, DataPath: "/var/lib/longhorn",
	Sysctl:   map[string]string{"fs.inotify.max_user_watches": "524288", "fs.inotify.max_user_instances": "512"},
	Journald: &profiles.Journald{Persistent: true, MaxUse: "1G"}, Packages: []string{"htop", "open-iscsi"}}

// The tuning is read with the prerequisites (a real shell reads this
// machine's /proc/sys), judged live and persisted, and its fixes and
// files are pinned.
func TestTuningAssessFixesAndFiles(t *testing.T) {
	f, err := Gather(context.Background(), local, tuned)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"sysctl.fs.inotify.max_user_watches", "sysctl.fs.inotify.max_user_instances", "sysctl.file", "journald.file", "journald.persistent", "pkg.htop"} {
		if _, ok := f[k]; !ok {
			t.Errorf("fact %s missing", k)
		}
	}
	if v := f["sysctl.fs.inotify.max_user_watches"]; v == "" || strings.ContainsAny(v, " \t") {
		t.Errorf("max_user_watches read as %q", v)
	}
	enc := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	low := Facts{"sysctl.fs.inotify.max_user_watches": "8192", "sysctl.fs.inotify.max_user_instances": "128", "journald.persistent": "no", "pkg.htop": ""}
	live := Facts{"sysctl.fs.inotify.max_user_watches": "524288", "sysctl.fs.inotify.max_user_instances": "512", "journald.persistent": "no"}
	done := Facts{"sysctl.fs.inotify.max_user_watches": "524288", "sysctl.fs.inotify.max_user_instances": "512", "sysctl.file": enc(tuned.SysctlConf()),
		"journald.file": enc(tuned.JournaldConf()), "journald.persistent": "yes", "pkg.htop": "install ok installed"}
	var b strings.Builder
	for _, tc := range []struct {
		name  string
		facts Facts
	}{{"kernel defaults", low}, {"live but not persisted", live}, {"tuned", done}, {"unobserved", nil}} {
		fmt.Fprintf(&b, "## %s\n", tc.name)
		if tc.facts != nil {
			for _, f := range Assess(tc.facts, tuned) {
				if f.Tuning {
					fmt.Fprintf(&b, "%-36s %-7s %s\n", f.Item, f.Status, f.Detail)
				}
			}
		}
		for _, fx := range Fixes(tc.facts, tuned) {
			if fx.Item == "sysctl" || fx.Item == "journald" || fx.Item == "packages" {
				fmt.Fprintf(&b, "fix: %s\n", fx.Desc)
			}
		}
	}
	b.WriteString("## " + SysctlFile + "\n" + tuned.SysctlConf() + "## " + JournaldFile + "\n" + tuned.JournaldConf())
	for _, fx := range Fixes(nil, tuned) {
		if fx.Item == "sysctl" || fx.Item == "journald" {
			b.WriteString("## fix " + fx.Item + "\n" + fx.Script + "\n")
		}
	}
	golden.Assert(t, "testdata/tuning.txt", []byte(b.String()))
}

// The etcd mount on a server: each state the host can be in, judged, and
// the fix that makes it (or refuses to).
func TestEtcdMountAssessAndScript(t *testing.T) {
	w := Want{Longhorn: true, DataPath: "/var/lib/longhorn", EtcdMount: "/mnt/nvme"}
	var b strings.Builder
	for _, tc := range []struct {
		name  string
		facts Facts
	}{
		{"disk not mounted", Facts{"etcdmount.mounted": "no", "etcdmount.bound": "no"}},
		{"old data on the root disk", Facts{"etcdmount.mounted": "yes /dev/nvme0n1p1 ext4", "etcdmount.bound": "no", "etcdmount.target": "etcd snapshots "}},
		{"fresh", Facts{"etcdmount.mounted": "yes /dev/nvme0n1p1 ext4", "etcdmount.bound": "no"}},
		{"bound, not at boot", Facts{"etcdmount.mounted": "yes /dev/nvme0n1p1 ext4", "etcdmount.bound": "yes", "etcdmount.fstab": "yes", "etcdmount.unit": "no"}},
		{"in place", Facts{"etcdmount.mounted": "yes /dev/nvme0n1p1 ext4", "etcdmount.bound": "yes", "etcdmount.fstab": "yes", "etcdmount.unit": "yes"}},
	} {
		for _, f := range Assess(tc.facts, w) {
			if f.Item == "etcd data mount" {
				fmt.Fprintf(&b, "%-26s %-7s %s\n", tc.name, f.Status, f.Detail)
			}
		}
	}
	for _, fx := range Fixes(nil, w) {
		if fx.Item == "etcd data mount" {
			b.WriteString("## fix: " + fx.Desc + "\n" + fx.Script + "\n")
		}
	}
	golden.Assert(t, "testdata/etcd-mount.txt", []byte(b.String()))
	if !strings.Contains(GatherScript(w), "mountpoint -q") || strings.Contains(GatherScript(Want{DataPath: "/x"}), "etcdmount") {
		t.Error("the etcd mount is gathered only where it is wanted")
	}
}

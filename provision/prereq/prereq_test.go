package prereq

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/labctl/labctl/internal/golden"
)

// local runs commands on this machine, so the gather script is exercised
// by a real shell, dpkg and systemctl rather than a fake.
func local(ctx context.Context, script string, _ bool) (string, error) {
	out, err := exec.CommandContext(ctx, "sh", "-c", script).Output()
	return strings.TrimSpace(string(out)), err
}

func TestGatherReadsEveryFactOnARealDebianHost(t *testing.T) {
	f, err := Gather(context.Background(), local, "/var/lib/longhorn")
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
	if got := len(Assess(f, "/var/lib/longhorn")); got != 11 {
		t.Errorf("%d findings, want 11", got)
	}
}

var (
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
			for _, f := range Assess(tc.facts, "/var/lib/longhorn") {
				fmt.Fprintf(&b, "%-20s %-7s %s\n", f.Item, f.Status, f.Detail)
			}
		}
		for _, fx := range Fixes(tc.facts, "/var/lib/longhorn") {
			fmt.Fprintf(&b, "fix: %s (kernel-limited=%v)\n", fx.Desc, fx.KernelLimited)
		}
	}
	golden.Assert(t, "testdata/assess.txt", []byte(b.String()))
	if n := len(Fixes(ready, "/var/lib/longhorn")); n != 0 {
		t.Errorf("a ready host gets %d fixes", n)
	}
	if n := len(Fixes(noModules, "/var/lib/longhorn")); n != 0 {
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

package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	gp "github.com/luthermonson/go-proxmox"

	"github.com/labctl/labctl/provision/proxmox/pvesim"
)

// TestPlanObserveShowsDriftAndDestroyPurgesVMs drives the CLI against the
// PVE simulator: three VMs as labctl makes them, one changed by hand;
// `plan --observe` shows only that one's drift; `destroy` (confirmed by
// the profile's name) purges the VMs and forgets their host keys.
func TestPlanObserveShowsDriftAndDestroyPurgesVMs(t *testing.T) {
	sim := pvesim.New(pvesim.Options{Tokens: map[string]string{"root@pam!labctl": "sekret-9f8e"}})
	defer sim.Close()
	dir := t.TempDir()
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOaH5m9Yb8n4cBqfZ1n0C0E5dC1o2hBq4b0M0a0Y0y0 ops@lab"
	if err := os.WriteFile(filepath.Join(dir, "id.pub"), []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		sim.AddVM(100+i, fmt.Sprintf("kube-srv-%d", i), map[string]string{
			"cores": "4", "memory": "8192", "agent": "1", "ciuser": "ronald", "sshkeys": gp.EncodeSSHKeys(key),
			"ipconfig0": fmt.Sprintf("ip=10.0.40.%d/24,gw=10.0.40.1", 100+i), "nameserver": "10.0.40.1",
			"net0": "virtio=BC:24:11:00:00:0" + fmt.Sprint(i) + ",bridge=vmbr0", "scsi0": fmt.Sprintf("local-lvm:vm-%d-disk-0,size=64G", 100+i),
			"description": fmt.Sprintf("labctl: profile pve-cli, node kube-srv-%d", i),
		}, true)
	}
	sim.SetConfig(102, "memory", "4096")
	known := filepath.Join(dir, "known_hosts")
	hostKey := " ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake\n"
	if err := os.WriteFile(known, []byte("10.0.40.101"+hostKey+"10.0.40.102"+hostKey+"10.0.40.103"+hostKey+"10.0.40.52"+hostKey), 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(sim.Certificate().Raw)
	fp := strings.TrimSuffix(strings.ReplaceAll(fmt.Sprintf("% X", sum[:]), " ", ":"), ":")
	profile := filepath.Join(dir, "pve-cli.yaml")
	if err := os.WriteFile(profile, []byte(fmt.Sprintf(`apiVersion: labctl.dev/v1alpha1
kind: Profile
metadata: {name: pve-cli}
extends: production
spec:
  ssh: {user: ronald, port: 22, knownHostsFile: %s}
  proxmox:
    endpoint: %s
    fingerprint: %s
    tokenRef: {env: LABCTL_TEST_PVE_TOKEN}
    node: pve
    template: debian-12-cloudinit
    storage: local-lvm
    vm: {cores: 4, memoryMiB: 8192, diskGiB: 64}
    sshKeys: [%s]
`, known, sim.URL, fp, filepath.Join(dir, "id.pub"))), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LABCTL_TEST_PVE_TOKEN", "root@pam!labctl=sekret-9f8e")

	out, errOut, code := labctl(t, "plan", "-f", profile, "--observe")
	if code != 0 {
		t.Fatalf("plan --observe: exit %d: %s", code, errOut)
	}
	t.Logf("labctl plan --observe:\n%s", out)
	for _, want := range []string{
		`kube-srv-2  + change VM 102 "kube-srv-2" to match the profile (drift; needs --apply-drift): memory 4096 → 8192`,
		"VMs observed at " + sim.URL + "/api2/json",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
	for _, unwanted := range []string{"full-clone", `start VM 101`, "sekret"} {
		if strings.Contains(out+errOut, unwanted) {
			t.Errorf("plan shows %q:\n%s", unwanted, out)
		}
	}
	if got := len(sim.VMs()); got != 3 {
		t.Fatalf("plan changed the VMs: %d left", got)
	}

	kubeconfig := filepath.Join(dir, "kubeconfig")
	out, errOut, code = labctl(t, "destroy", "-f", profile, "--yes", "--kubeconfig", kubeconfig)
	if code != 0 {
		t.Fatalf("destroy: exit %d: %s", code, errOut)
	}
	if got := len(sim.VMs()); got != 0 {
		t.Errorf("%d VMs left after destroy", got)
	}
	for i := 1; i <= 3; i++ {
		if !strings.Contains(out, fmt.Sprintf(`destroyed VM "kube-srv-%d"`, i)) {
			t.Errorf("destroy output lacks kube-srv-%d:\n%s", i, out)
		}
	}
	left, _ := os.ReadFile(known)
	if string(left) != "10.0.40.52"+hostKey || !strings.Contains(out, "forgot 3 host key line(s)") {
		t.Errorf("known_hosts after destroy:\n%s\noutput:\n%s", left, out)
	}
}

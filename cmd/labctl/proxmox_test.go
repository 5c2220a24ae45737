package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	gp "github.com/luthermonson/go-proxmox"
	"golang.org/x/crypto/ssh"

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
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "id"), pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		sim.AddVM(100+i, fmt.Sprintf("kube-srv-%d", i), map[string]string{
			"cores": "4", "memory": "8192", "agent": "1", "ciuser": "ronald", "sshkeys": gp.EncodeSSHKeys(key),
			"ipconfig0": fmt.Sprintf("ip=127.0.40.%d/24,gw=127.0.40.1", 100+i), "nameserver": "127.0.40.1",
			"net0": "virtio=BC:24:11:00:00:0" + fmt.Sprint(i) + ",bridge=vmbr0", "scsi0": fmt.Sprintf("local-lvm:vm-%d-disk-0,size=64G", 100+i),
			"description": fmt.Sprintf("labctl: profile pve-cli, node kube-srv-%d", i),
		}, true)
	}
	sim.SetConfig(102, "memory", "4096")
	known := filepath.Join(dir, "known_hosts")
	hostPub, _ := ssh.NewPublicKey(priv.Public())
	hostKey := " " + string(ssh.MarshalAuthorizedKey(hostPub))
	if err := os.WriteFile(known, []byte("[127.0.40.101]:9"+hostKey+"[127.0.40.102]:9"+hostKey+"[127.0.40.103]:9"+hostKey+"127.0.40.52"+hostKey), 0o600); err != nil {
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
  # Loopback, on a port nothing listens on: the observed plan's SSH is
  # refused at once; nothing real is ever reached.
  network: {subnet: 127.0.40.0/24, gateway: 127.0.40.1, nameservers: [127.0.40.1]}
  nodes:
    - {name: kube-srv-1, address: 127.0.40.101, role: server, vmid: 101}
    - {name: kube-srv-2, address: 127.0.40.102, role: server, vmid: 102}
    - {name: kube-srv-3, address: 127.0.40.103, role: server, vmid: 103}
  ssh: {user: ronald, port: 9, identityFiles: [%s], knownHostsFile: %s}
  dns: {domain: lab.test, records: []}
  proxmox:
    endpoint: %s
    fingerprint: %s
    tokenRef: {env: LABCTL_TEST_PVE_TOKEN}
    node: pve
    template: debian-12-cloudinit
    storage: local-lvm
    vm: {cores: 4, memoryMiB: 8192, diskGiB: 64}
    sshKeys: [%s]
`, filepath.Join(dir, "id"), known, sim.URL, fp, filepath.Join(dir, "id.pub"))), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LABCTL_TEST_PVE_TOKEN", "root@pam!labctl=sekret-9f8e")

	out, errOut, code := labctl(t, "plan", "-f", profile, "--observe")
	// The VMs run, but their hosts cannot be reached: the plan shows what
	// it observed and fails for what it could not.
	if code != 1 {
		t.Fatalf("plan --observe: exit %d: %s", code, errOut)
	}
	t.Logf("labctl plan --observe:\n%s", out)
	for _, want := range []string{
		`+ change VM 102 "kube-srv-2" to match the profile (drift; needs --apply-drift): memory 4096 → 8192`,
		`kube-srv-1  = VM 101 as planned, running`,
		"! prerequisites/kube-srv-2: kube-srv-2: connect 127.0.40.102:9 as ronald: dial tcp 127.0.40.102:9: connect: connection refused",
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
	out, errOut, code = labctl(t, "destroy", "-f", profile, "--kubeconfig", kubeconfig)
	if code != 1 || !strings.Contains(errOut, `destroy pve-cli: not confirmed (type "pve-cli", or pass --yes)`) || !strings.Contains(out, `+ stop and purge VM 102 "kube-srv-2" with its disks`) || len(sim.VMs()) != 3 {
		t.Fatalf("destroy unconfirmed: exit %d, %d VMs\n%s\n%s", code, len(sim.VMs()), out, errOut)
	}
	out, errOut, code = labctl(t, "destroy", "-f", profile, "--yes", "--kubeconfig", kubeconfig)
	if code != 0 {
		t.Fatalf("destroy: exit %d: %s", code, errOut)
	}
	if got := len(sim.VMs()); got != 0 {
		t.Errorf("%d VMs left after destroy", got)
	}
	if n := strings.Count(out, "Destroy VM: done"); n != 3 {
		t.Errorf("destroy output shows %d VMs destroyed:\n%s", n, out)
	}
	left, _ := os.ReadFile(known)
	if string(left) != "127.0.40.52"+hostKey || !strings.Contains(out, "3 host key lines of the VMs in "+known) {
		t.Errorf("known_hosts after destroy:\n%s\noutput:\n%s", left, out)
	}
}

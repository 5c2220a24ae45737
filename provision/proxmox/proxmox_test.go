package proxmox_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/flow"
	"github.com/labctl/labctl/plan"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/proxmox"
	"github.com/labctl/labctl/provision/proxmox/pvesim"
)

const (
	tokenID     = "root@pam!labctl"
	tokenSecret = "5f0c3d8e-2b7a-4c1e-9a55-0d1e2f3a4b5c"
	tokenEnv    = "LABCTL_TEST_PVE_TOKEN"
)

// rig is a simulator with the template the production profile names, and
// the profile pointed at it.
type rig struct {
	sim     *pvesim.Sim
	profile *profiles.Loaded
	pubKey  string
	env     map[string]string
	log     bytes.Buffer
	mu      sync.Mutex
	sshWait []string
	// hostKeys are the VMs' SSH host keys by name, as their guest agents
	// read them; known is ssh.knownHostsFile.
	hostKeys map[string]ssh.PublicKey
	known    string
}

func newHostKey(t testing.TB) ssh.PublicKey {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ssh.NewPublicKey(pub)
	return k
}

func newRig(t testing.TB, lat pvesim.Latency, nodesYAML string) *rig {
	t.Helper()
	r := &rig{env: map[string]string{tokenEnv: tokenID + "=" + tokenSecret}, hostKeys: map[string]ssh.PublicKey{}}
	for i := 1; i <= 3; i++ {
		r.hostKeys[fmt.Sprintf("kube-srv-%d", i)] = newHostKey(t)
	}
	readFile := func(_ context.Context, vm pvesim.VM, path string) ([]byte, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if k := r.hostKeys[vm.Name]; k != nil && path == proxmox.HostKeyFile {
			return ssh.MarshalAuthorizedKey(k), nil
		}
		return nil, os.ErrNotExist
	}
	r.sim = pvesim.New(pvesim.Options{Tokens: map[string]string{tokenID: tokenSecret}, Latency: lat, LockWait: 200 * time.Millisecond, Hooks: pvesim.Hooks{ReadFile: readFile}})
	t.Cleanup(r.sim.Close)
	r.sim.AddTemplate(9000, "debian-12-cloudinit", map[string]string{
		"cores": "2", "memory": "2048", "scsi0": "local-lvm:base-9000-disk-0,size=8G", "ide2": "local-lvm:vm-9000-cloudinit,media=cdrom",
		"net0": "virtio=BC:24:11:5E:00:01,bridge=vmbr0", "scsihw": "virtio-scsi-pci", "boot": "order=scsi0", "ostype": "l26",
	})
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	sp, _ := ssh.NewPublicKey(pub)
	r.pubKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " ops@lab"
	dir := t.TempDir()
	r.known = filepath.Join(dir, "known_hosts")
	keyFile := filepath.Join(dir, "id.pub")
	if err := os.WriteFile(keyFile, []byte(r.pubKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if nodesYAML == "" {
		nodesYAML = `
    - {name: kube-srv-1, address: 10.0.40.101, role: server, vmid: 101}
    - {name: kube-srv-2, address: 10.0.40.102, role: server, vmid: 102}
    - {name: kube-srv-3, address: 10.0.40.103, role: server, vmid: 103}`
	}
	text := fmt.Sprintf(`apiVersion: labctl.dev/v1alpha1
kind: Profile
metadata: {name: production}
extends: production
spec:
  nodes:%s
  ssh: {user: ronald, port: 22, knownHostsFile: %s}
  proxmox:
    endpoint: %s
    fingerprint: %s
    tokenRef: {env: %s}
    node: pve
    template: debian-12-cloudinit
    storage: local-lvm
    vm: {cores: 4, memoryMiB: 8192, diskGiB: 64}
    sshKeys: [%s]
`, nodesYAML, r.known, r.sim.URL, fingerprint(r.sim), tokenEnv, keyFile)
	l, err := profiles.Loader{}.LoadBytes(filepath.Join(dir, "production.yaml"), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	l.Spec.Storage.Longhorn = nil // no host prerequisites: this tests the VMs
	r.profile = l
	return r
}

func fingerprint(s *pvesim.Sim) string {
	sum := sha256.Sum256(s.Certificate().Raw)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

func (r *rig) lookup(k string) (string, bool) { v, ok := r.env[k]; return v, ok }

func (r *rig) backend(t testing.TB, applyDrift bool) *proxmox.Backend {
	t.Helper()
	c, err := proxmox.Connect(r.profile.Spec.Proxmox, proxmox.ConnectOptions{Lookup: r.lookup})
	if err != nil {
		t.Fatal(err)
	}
	return &proxmox.Backend{Client: c, Spec: &r.profile.Spec, Profile: r.profile.Metadata.Name, ApplyDrift: applyDrift,
		Poll: 20 * time.Millisecond, AgentWait: 2 * time.Second, Log: &r.log}
}

// WaitSSH stands in for the SSH wait (tested over real SSH elsewhere):
// it records that the VM was started before.
func (r *rig) WaitSSH(_ context.Context, n profiles.Node) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sshWait = append(r.sshWait, n.Name)
	return nil
}
func (r *rig) ObservePrerequisites(context.Context, profiles.Node) (facts.Prerequisites, error) {
	return facts.Prerequisites{}, nil
}
func (r *rig) AssumeFresh(profiles.Node) facts.Prerequisites { return facts.Prerequisites{} }
func (r *rig) ApplyPrerequisite(context.Context, profiles.Node, facts.Fix) (string, error) {
	return "", nil
}
func (r *rig) KnownHostKeys([]profiles.Node) ([]string, error) { return nil, nil }
func (r *rig) ForgetHostKeys([]profiles.Node) (int, error)     { return 0, nil }

// run runs the VM part of the create flow; dry records instead.
func (r *rig) run(t testing.TB, b *proxmox.Backend, dry bool) (*plan.Report, []plan.Event, error) {
	t.Helper()
	p, err := flow.Prepare(&r.profile.Profile, flow.Backends{VMs: b, Hosts: r}, flow.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rec := &plan.Recorder{}
	rep, err := plan.Run(context.Background(), p, plan.Options{DryRun: dry, Sink: rec})
	return rep, rec.Events(), err
}

func changes(evs []plan.Event) []string {
	var out []string
	for _, e := range evs {
		if e.Kind == plan.KindChange {
			out = append(out, e.Host+": "+e.Message)
		}
	}
	return out
}

func mutating(reqs []string) []string {
	var out []string
	for _, r := range reqs {
		if !strings.HasPrefix(r, "GET ") {
			out = append(out, r)
		}
	}
	return out
}

// TestCreateThenNoOpThenDriftThenDestroy: three VMs cloned, configured and
// started from nothing; a re-run only reads; a VM changed behind labctl's
// back shows as drift in the plan, is refused without --apply-drift and
// fixed with it; destroy purges all three.
func TestCreateThenNoOpThenDriftThenDestroy(t *testing.T) {
	r := newRig(t, pvesim.Latency{}, "")
	b := r.backend(t, false)
	rep, evs, err := r.run(t, b, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first run: %d changes, wall %s", rep.Changes(), rep.Wall())
	if got := len(changes(evs)); got != 9 {
		t.Errorf("first run: %d changes, want 9 (clone, configure, start × 3): %v", got, changes(evs))
	}
	vms := r.sim.VMs()
	if len(vms) != 3 {
		t.Fatalf("%d VMs, want 3", len(vms))
	}
	for i, vm := range vms {
		want := 101 + i
		c := vm.Config
		switch {
		case vm.VMID != want || vm.Name != fmt.Sprintf("kube-srv-%d", i+1):
			t.Errorf("VM %d %q, want %d kube-srv-%d", vm.VMID, vm.Name, want, i+1)
		case vm.Status != "running" || vm.Lock != "":
			t.Errorf("VM %d: status %s lock %q", vm.VMID, vm.Status, vm.Lock)
		case c["cores"] != "4" || c["memory"] != "8192" || c["agent"] != "1":
			t.Errorf("VM %d: cores %s memory %s agent %s", vm.VMID, c["cores"], c["memory"], c["agent"])
		case c["scsi0"] != fmt.Sprintf("local-lvm:vm-%d-disk-0,size=64G", want):
			t.Errorf("VM %d: disk %s", vm.VMID, c["scsi0"])
		case vm.Address.String() != fmt.Sprintf("10.0.40.%d/24", want) || vm.Gateway != "10.0.40.1" || c["nameserver"] != "10.0.40.1":
			t.Errorf("VM %d: ipconfig0 %s nameserver %s", vm.VMID, c["ipconfig0"], c["nameserver"])
		case vm.CIUser != "ronald" || len(vm.SSHKeys) != 1 || vm.SSHKeys[0] != r.pubKey:
			t.Errorf("VM %d: ciuser %q keys %q", vm.VMID, vm.CIUser, vm.SSHKeys)
		case c["description"] != fmt.Sprintf("labctl: profile production, node kube-srv-%d", i+1):
			t.Errorf("VM %d: description %q", vm.VMID, c["description"])
		}
	}
	if len(r.sshWait) != 3 {
		t.Errorf("SSH waited for %v", r.sshWait)
	}
	known, _ := os.ReadFile(r.known)
	for i := 1; i <= 3; i++ {
		line := fmt.Sprintf("10.0.40.%d %s", 100+i, ssh.MarshalAuthorizedKey(r.hostKeys[fmt.Sprintf("kube-srv-%d", i)]))
		if !strings.Contains(string(known), line) {
			t.Errorf("known_hosts lacks %q (read through the guest agent):\n%s", line, known)
		}
	}

	before := len(r.sim.Requests())
	rep, evs, err = r.run(t, b, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Changes() != 0 || len(changes(evs)) != 0 {
		t.Errorf("second run: %d changes: %v", rep.Changes(), changes(evs))
	}
	if m := mutating(r.sim.Requests()[before:]); len(m) > 0 {
		t.Errorf("second run changed Proxmox: %v", m)
	}

	r.sim.SetConfig(102, "cores", "2")
	r.sim.SetConfig(102, "scsi0", "local-lvm:vm-102-disk-0,size=32G")
	_, evs, err = r.run(t, b, true) // labctl plan --observe
	if err != nil {
		t.Fatal(err)
	}
	got := changes(evs)
	if len(got) != 1 || !strings.Contains(got[0], `kube-srv-2: change VM 102 "kube-srv-2" to match the profile (drift; needs --apply-drift): cores 2 → 4, disk 32G → 64G`) {
		t.Errorf("plan shows %q", got)
	}
	_, _, err = r.run(t, b, false)
	if !errors.Is(err, proxmox.ErrDrift) || !strings.Contains(err.Error(), "re-run with --apply-drift") {
		t.Fatalf("create over drift: %v, want ErrDrift", err)
	}
	if c := r.sim.VMs()[1].Config; c["cores"] != "2" {
		t.Errorf("drift changed without confirmation: cores %s", c["cores"])
	}
	if _, _, err = r.run(t, r.backend(t, true), false); err != nil {
		t.Fatal(err)
	}
	if c := r.sim.VMs()[1].Config; c["cores"] != "4" || !strings.Contains(c["scsi0"], "size=64G") {
		t.Errorf("after --apply-drift: cores %s, disk %s", c["cores"], c["scsi0"])
	}
	if !strings.Contains(r.log.String(), "VM 102 runs; Proxmox applies some of the changes") {
		t.Errorf("no warning about a running VM's changes: %q", r.log.String())
	}
	if rep, _, err = r.run(t, b, false); err != nil || rep.Changes() != 0 {
		t.Errorf("after the fix: %d changes, %v", rep.Changes(), err)
	}

	for _, n := range r.profile.Spec.Nodes {
		existed, err := b.DestroyVM(context.Background(), n)
		if err != nil || !existed {
			t.Fatalf("destroy %s: %v, %v", n.Name, existed, err)
		}
	}
	if vms := r.sim.VMs(); len(vms) != 0 {
		t.Errorf("after destroy: %d VMs", len(vms))
	}
	if existed, err := b.DestroyVM(context.Background(), r.profile.Spec.Nodes[0]); err != nil || existed {
		t.Errorf("destroy again: %v, %v", existed, err)
	}
}

// TestHostKeysComeThroughTheGuestAgent: a VM recreated outside labctl
// (its old line still in known_hosts) is cloned afresh and its new key
// replaces the stale line; a VM that was not re-created but shows another
// key is refused, naming both fingerprints.
func TestHostKeysComeThroughTheGuestAgent(t *testing.T) {
	r := newRig(t, pvesim.Latency{}, "")
	b := r.backend(t, false)
	if _, _, err := r.run(t, b, false); err != nil {
		t.Fatal(err)
	}
	r.sim.Remove(101) // gone behind labctl's back
	r.mu.Lock()
	old := r.hostKeys["kube-srv-1"]
	r.hostKeys["kube-srv-1"] = newHostKey(t)
	r.mu.Unlock()
	b = r.backend(t, false)
	if _, _, err := r.run(t, b, false); err != nil {
		t.Fatal(err)
	}
	known, _ := os.ReadFile(r.known)
	if strings.Contains(string(known), string(ssh.MarshalAuthorizedKey(old))) || !strings.Contains(string(known), "10.0.40.101 "+string(ssh.MarshalAuthorizedKey(r.hostKeys["kube-srv-1"]))) {
		t.Errorf("known_hosts after the re-clone:\n%s", known)
	}
	if !strings.Contains(r.log.String(), "node kube-srv-1: recorded host key ssh-ed25519") {
		t.Errorf("log: %s", r.log.String())
	}

	r.sim.PowerOff(102)
	r.mu.Lock()
	r.hostKeys["kube-srv-2"] = newHostKey(t)
	r.mu.Unlock()
	_, _, err := r.run(t, r.backend(t, false), false)
	if err == nil || !strings.Contains(err.Error(), "host key mismatch: 10.0.40.102 has ssh-ed25519") {
		t.Fatalf("another key for a VM labctl did not re-create: %v", err)
	}
}

// TestFailingCloneLeavesNoOrphanAndReRunCreates: PVE removes the VM of a
// failed clone; the error says so and the re-run clones again.
func TestFailingCloneLeavesNoOrphanAndReRunCreates(t *testing.T) {
	r := newRig(t, pvesim.Latency{}, "")
	r.sim.Fail(pvesim.CloneFails)
	b := r.backend(t, false)
	_, _, err := r.run(t, b, false)
	if err == nil || !strings.Contains(err.Error(), "clone failed: copy failed") || !strings.Contains(err.Error(), "Proxmox removed the half-made VM") {
		t.Fatalf("err = %v", err)
	}
	t.Logf("error: %v", err)
	if n := len(r.sim.VMs()); n != 2 {
		t.Errorf("%d VMs after one failed clone, want 2", n)
	}
	if _, _, err := r.run(t, b, false); err != nil {
		t.Fatal(err)
	}
	if n := len(r.sim.VMs()); n != 3 {
		t.Errorf("%d VMs after the re-run, want 3", n)
	}
}

// TestCloneLeftLockedNamesTheFixThenReRunFinishes: a clone whose cleanup
// failed too leaves a VM locked "clone", which an API token cannot
// remove; the error says what to run on the node; after the operator
// did, the re-run creates it.
func TestCloneLeftLockedNamesTheFixThenReRunFinishes(t *testing.T) {
	r := newRig(t, pvesim.Latency{}, "")
	r.sim.Fail(pvesim.CloneFailsLocked)
	b := r.backend(t, false)
	_, _, err := r.run(t, b, false)
	if err == nil || !strings.Contains(err.Error(), "is locked (clone)") || !strings.Contains(err.Error(), "qm unlock") {
		t.Fatalf("err = %v", err)
	}
	var locked int
	for _, vm := range r.sim.VMs() {
		if vm.Lock == "clone" {
			locked = vm.VMID
		}
	}
	if locked == 0 {
		t.Fatal("no VM left locked")
	}
	_, _, err = r.run(t, b, false)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("qm unlock %d && qm destroy %d --purge", locked, locked)) {
		t.Fatalf("re-run: %v", err)
	}
	r.sim.Unlock(locked)
	r.sim.Remove(locked)
	if _, _, err := r.run(t, b, false); err != nil {
		t.Fatal(err)
	}
	if n := len(r.sim.VMs()); n != 3 {
		t.Errorf("%d VMs, want 3", n)
	}
}

// TestInterruptedAfterCloneIsAdopted: a VM cloned by a run killed before
// it configured the VM is adopted and configured, not refused as drift.
func TestInterruptedAfterCloneIsAdopted(t *testing.T) {
	r := newRig(t, pvesim.Latency{}, "")
	b := r.backend(t, false)
	n := r.profile.Spec.Nodes[0]
	if err := b.CloneVM(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	_, evs, err := r.run(t, b, false)
	if err != nil {
		t.Fatal(err)
	}
	var adopted bool
	for _, e := range evs {
		adopted = adopted || (e.Host == n.Name && strings.Contains(e.Message, "cloned by an interrupted run: adopting it"))
	}
	if !adopted {
		t.Error("no adoption logged")
	}
	if c := r.sim.VMs()[0].Config; c["cores"] != "4" || c["description"] != "labctl: profile production, node kube-srv-1" {
		t.Errorf("adopted VM: %v", c)
	}
}

// TestNextIDForParallelClones: without VMIDs in the profile, three
// parallel clones get three ids from /cluster/nextid.
func TestNextIDForParallelClones(t *testing.T) {
	r := newRig(t, pvesim.Latency{API: 5 * time.Millisecond, Clone: 50 * time.Millisecond}, `
    - {name: kube-srv-1, address: 10.0.40.101, role: server}
    - {name: kube-srv-2, address: 10.0.40.102, role: server}
    - {name: kube-srv-3, address: 10.0.40.103, role: server}`)
	if _, _, err := r.run(t, r.backend(t, false), false); err != nil {
		t.Fatal(err)
	}
	var ids []int
	for _, vm := range r.sim.VMs() {
		ids = append(ids, vm.VMID)
	}
	if fmt.Sprint(ids) != "[100 101 102]" {
		t.Errorf("VMIDs %v", ids)
	}
}

// TestNextIDTakenByAnotherClientAsksAgain: PVE refuses the clone ("config
// file already exists") when another client took the id nextid gave;
// labctl asks for the next one.
func TestNextIDTakenByAnotherClientAsksAgain(t *testing.T) {
	r := newRig(t, pvesim.Latency{}, `
    - {name: kube-srv-1, address: 10.0.40.101, role: server}
    - {name: kube-srv-2, address: 10.0.40.102, role: server}
    - {name: kube-srv-3, address: 10.0.40.103, role: server}`)
	r.sim.Fail(pvesim.NextIDRace)
	if _, _, err := r.run(t, r.backend(t, false), false); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, vm := range r.sim.VMs() {
		got = append(got, fmt.Sprintf("%d %s", vm.VMID, vm.Name))
	}
	if len(got) != 4 || got[0] != "100 other-client" {
		t.Errorf("VMs %v", got)
	}
}

// TestLockTimeoutIsRetried: "can't lock file … got timeout" is transient.
func TestLockTimeoutIsRetried(t *testing.T) {
	r := newRig(t, pvesim.Latency{}, "")
	r.sim.Fail(pvesim.LockTimeout)
	if _, _, err := r.run(t, r.backend(t, false), false); err != nil {
		t.Fatal(err)
	}
	var clones int
	for _, q := range r.sim.Requests() {
		if strings.HasSuffix(q, "/qemu/9000/clone") {
			clones++
		}
	}
	if clones != 4 {
		t.Errorf("%d clone requests, want 4 (one retried)", clones)
	}
}

func TestErrorsNameTheCause(t *testing.T) {
	t.Run("401", func(t *testing.T) {
		r := newRig(t, pvesim.Latency{}, "")
		r.env[tokenEnv] = tokenID + "=wrong-secret"
		_, _, err := r.run(t, r.backend(t, false), true)
		if err == nil || !strings.Contains(err.Error(), "refused token root@pam!labctl (401/403)") || strings.Contains(err.Error(), "wrong-secret") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("401 injected", func(t *testing.T) {
		r := newRig(t, pvesim.Latency{}, "")
		r.sim.Fail(pvesim.Unauthorized)
		_, _, err := r.run(t, r.backend(t, false), true)
		if err == nil || !strings.Contains(err.Error(), "refused token") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("template missing", func(t *testing.T) {
		r := newRig(t, pvesim.Latency{}, "")
		r.profile.Spec.Proxmox.Template = "ubuntu-24.04"
		_, _, err := r.run(t, r.backend(t, false), false)
		if err == nil || !strings.Contains(err.Error(), `proxmox.template: no template "ubuntu-24.04" on node pve (templates there: debian-12-cloudinit)`) {
			t.Fatalf("err = %v", err)
		}
		if n := len(r.sim.VMs()); n != 0 {
			t.Errorf("%d VMs made", n)
		}
	})
	t.Run("VMID taken", func(t *testing.T) {
		r := newRig(t, pvesim.Latency{}, "")
		r.sim.AddTemplate(102, "someone-elses", nil)
		_, _, err := r.run(t, r.backend(t, false), true)
		if err == nil || !strings.Contains(err.Error(), `node kube-srv-2: VMID 102 is taken by "someone-elses"`) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("storage missing", func(t *testing.T) {
		r := newRig(t, pvesim.Latency{}, "")
		r.profile.Spec.Proxmox.Storage = "ceph-pool"
		_, _, err := r.run(t, r.backend(t, false), false)
		if err == nil || !strings.Contains(err.Error(), "storage 'ceph-pool' does not exist") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("unknown node", func(t *testing.T) {
		r := newRig(t, pvesim.Latency{}, "")
		r.profile.Spec.Proxmox.Node = "pve2"
		_, _, err := r.run(t, r.backend(t, false), false)
		if err == nil || !strings.Contains(err.Error(), "pve2") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("not ours", func(t *testing.T) {
		r := newRig(t, pvesim.Latency{}, "")
		b := r.backend(t, false)
		if _, _, err := r.run(t, b, false); err != nil {
			t.Fatal(err)
		}
		r.sim.SetConfig(101, "description", "hand-made")
		if _, err := b.DestroyVM(context.Background(), r.profile.Spec.Nodes[0]); err == nil || !strings.Contains(err.Error(), "was not created by labctl for profile production: not destroying it") {
			t.Fatalf("destroy: %v", err)
		}
	})
}

func TestTLSVerification(t *testing.T) {
	r := newRig(t, pvesim.Latency{}, "")
	px := *r.profile.Spec.Proxmox
	try := func(px profiles.Proxmox, insecure bool) (string, error) {
		var warn bytes.Buffer
		c, err := proxmox.Connect(&px, proxmox.ConnectOptions{Lookup: r.lookup, Insecure: insecure, Warn: &warn})
		if err != nil {
			return warn.String(), err
		}
		_, err = c.API.Version(context.Background())
		return warn.String(), err
	}
	if _, err := try(px, false); err != nil {
		t.Errorf("pinned fingerprint: %v", err)
	}
	wrong := px
	wrong.Fingerprint = strings.Repeat("AB:", 31) + "AB"
	if _, err := try(wrong, false); err == nil || !strings.Contains(err.Error(), "the profile pins AB:AB") {
		t.Errorf("wrong fingerprint: %v", err)
	}
	none := px
	none.Fingerprint = ""
	if _, err := try(none, false); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("no CA, no pin: %v", err)
	}
	ca := none
	ca.CAFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.sim.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := try(ca, false); err != nil {
		t.Errorf("CA file: %v", err)
	}
	warn, err := try(none, true)
	if err != nil || !strings.Contains(warn, "is NOT verified (--proxmox-insecure)") {
		t.Errorf("insecure: %v, warning %q", err, warn)
	}
	for _, tc := range []struct{ endpoint, want string }{
		{"http://pve:8006", "served over https only"},
		{"https://root:pw@pve:8006", "credentials in the URL are refused"},
		{"pve:8006", "not a URL"},
	} {
		bad := px
		bad.Endpoint = tc.endpoint
		if _, err := try(bad, false); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("endpoint %q: %v", tc.endpoint, err)
		}
	}
	r.env[tokenEnv] = "no-realm-token"
	if _, err := try(px, false); err == nil || !strings.Contains(err.Error(), "want user@realm!tokenname=secret") {
		t.Errorf("bad token: %v", err)
	}
}

// BenchmarkCreateVMsWallOverCriticalPath runs the VM steps for three
// nodes against PVE-like latencies and reports wall time over the
// critical path (goal ≤ 1.05: the three VMs proceed in parallel).
func BenchmarkCreateVMsWallOverCriticalPath(b *testing.B) {
	lat := pvesim.Latency{API: 15 * time.Millisecond, Clone: 600 * time.Millisecond, Config: 80 * time.Millisecond, Resize: 150 * time.Millisecond, Start: 300 * time.Millisecond}
	var ratio float64
	for i := 0; i < b.N; i++ {
		r := newRig(b, lat, "")
		be := r.backend(b, false)
		rep, _, err := r.run(b, be, false)
		if err != nil {
			b.Fatal(err)
		}
		ratio += float64(rep.Wall()) / float64(rep.CriticalPath())
		b.ReportMetric(float64(rep.Wall().Milliseconds()), "wall-ms")
	}
	b.ReportMetric(ratio/float64(b.N), "wall/critical")
}

//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/labctl/labctl/commands"
	"github.com/labctl/labctl/e2e/testbed"
	"github.com/labctl/labctl/internal/dnstest"
	"github.com/labctl/labctl/internal/sshdtest"
	"github.com/labctl/labctl/provision/proxmox/pvesim"
)

// pveLatency is what a small PVE host takes, roughly: a full clone of a
// small template, a config update, a disk grow, a VM start, per request.
var pveLatency = pvesim.Latency{API: 20 * time.Millisecond, Clone: 4 * time.Second, Config: 300 * time.Millisecond, Resize: time.Second, Start: 1500 * time.Millisecond, Stop: time.Second, Destroy: time.Second}

// pveBackedByBed is a PVE simulator whose VMs are bed nodes: a started VM
// becomes a node container with the address from its ipconfig0 and the
// user and keys from its cloud-init, holding what the template holds (the
// K3s stand-in's bundle and air-gap images); a destroyed VM's container is
// removed.
func pveBackedByBed(t *testing.T, kubeBin string, images []string) *pvesim.Sim {
	t.Helper()
	sim := pvesim.New(pvesim.Options{
		Tokens:  map[string]string{"root@pam!labctl": "e2e-3c1f"},
		Latency: pveLatency,
		Hooks: pvesim.Hooks{
			Start: func(ctx context.Context, vm pvesim.VM) error {
				if !bed.Subnet.Contains(vm.Address.Addr()) {
					return fmt.Errorf("VM %d: ipconfig0 address %s is outside the bed's network %s", vm.VMID, vm.Address, bed.Subnet)
				}
				if _, err := bed.StartCloudInitNode(ctx, vm.Name, vm.Address.Addr().String(), vm.CIUser, vm.SSHKeys); err != nil {
					return err
				}
				if err := bed.InstallBundle(ctx, vm.Name, kubeBin); err != nil {
					return err
				}
				// K3s's air-gap images: what a template prepared for an
				// offline cluster holds.
				for _, img := range images {
					if _, err := bed.Docker.Output(ctx, "cp", img, "labctl-e2e-"+vm.Name+":"+testbed.BundleDir+"/images/"+filepath.Base(img)); err != nil {
						return err
					}
				}
				return nil
			},
			Stop:    func(ctx context.Context, vm pvesim.VM) error { return bed.Kill(ctx, vm.Name) },
			Destroy: func(ctx context.Context, vm pvesim.VM) error { return bed.RemoveNode(ctx, vm.Name) },
			// The guest agent reads the node's files.
			ReadFile: func(ctx context.Context, vm pvesim.VM, path string) ([]byte, error) {
				out, err := bed.Exec(ctx, vm.Name, "cat", path)
				return []byte(out + "\n"), err
			},
		},
	})
	t.Cleanup(sim.Close)
	sim.AddTemplate(9000, "debian-12-cloudinit", map[string]string{
		"cores": "2", "memory": "2048", "scsi0": "local-lvm:base-9000-disk-0,size=8G", "ide2": "local-lvm:vm-9000-cloudinit,media=cdrom",
		"net0": "virtio=BC:24:11:5E:00:01,bridge=vmbr0", "scsihw": "virtio-scsi-pci", "boot": "order=scsi0", "ostype": "l26", "agent": "1",
	})
	return sim
}

// productionE2EProfile writes production-e2e: the production profile on
// the simulator, with bed addresses, the K3s stand-in, a fresh known_hosts
// and the flux section given.
func productionE2EProfile(t *testing.T, sim *pvesim.Sim, installScript string, ips []string, flux string) string {
	t.Helper()
	dir := t.TempDir()
	sum := sha256.Sum256(sim.Certificate().Raw)
	fp := strings.TrimSuffix(strings.ReplaceAll(fmt.Sprintf("% X", sum[:]), " ", ":"), ":")
	var nodes strings.Builder
	for i, ip := range ips {
		fmt.Fprintf(&nodes, "    - {name: kube-srv-%d, address: %s, role: server, vmid: %d}\n", i+1, ip, 201+i)
	}
	text := fmt.Sprintf(`apiVersion: labctl.dev/v1alpha1
kind: Profile
metadata: {name: production-e2e}
extends: production
spec:
  k3s:
    version: v1.34.4+k3s1
    installScriptURL: %s
`+homelabK3s+`  network: {subnet: %s, gateway: %s, nameservers: [%s]}
  nodes:
%s  ssh: {user: ronald, port: 22, identityFiles: [%s], knownHostsFile: %s}
  proxmox:
    endpoint: %s
    fingerprint: %s
    tokenRef: {env: LABCTL_E2E_PVE_TOKEN}
    node: pve
    template: debian-12-cloudinit
    storage: local-lvm
    vm: {cores: 2, memoryMiB: 4096, diskGiB: 32}
    sshKeys: [%s.pub]
%s`, installScript, bed.Subnet, bed.Subnet.Addr().Next(), bed.Subnet.Addr().Next(), nodes.String(), bed.KeyFile, filepath.Join(dir, "known_hosts"), sim.URL, fp, bed.KeyFile, flux)
	p := filepath.Join(dir, "production-e2e.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

var reWall = regexp.MustCompile(`wall ([0-9a-zµ.]+), critical path ([0-9a-zµ.]+)`)

func wallAndCritical(t *testing.T, out string) (time.Duration, time.Duration) {
	t.Helper()
	m := reWall.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no wall/critical path in:\n%s", out)
	}
	w, _ := time.ParseDuration(m[1])
	c, _ := time.ParseDuration(m[2])
	return w, c
}

// gitOverSSH serves the fixture repository over SSH from the host at the
// bed network's gateway, as a forge does: OpenSSH with the git tools.
// It returns the sshd (its authorized_keys is the forge's deploy keys),
// the repository and its ssh:// URL.
func gitOverSSH(t *testing.T, ctx context.Context) (*sshdtest.Server, *testbed.Repo, string) {
	t.Helper()
	git, err := testbed.StartGitServer(t.TempDir(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = git.Close() })
	repo, err := git.NewRepo(ctx, "gitops", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Commit(ctx, "fixture", fixtureFiles(t)); err != nil {
		t.Fatal(err)
	}
	s := sshdtest.New(t, sshdtest.Options{Listen: bed.Subnet.Addr().Next().String()}).Start()
	return s, repo, fmt.Sprintf("ssh://%s@%s:%d%s", s.User, s.Host, s.Port, repo.Bare)
}

// TestCreateProductionOnSimulatedProxmoxFromNothing runs `labctl create
// production-e2e` from nothing: three VMs cloned, configured and started
// on the PVE simulator (each start boots a bed node from its cloud-init),
// host prerequisites over SSH as the cloud-init user, K3s HA (init, two
// joins one at a time), kubeconfig; the three Nodes are Ready from the
// host. Then Flux: the generated deploy key is refused by the forge
// (the error shows its public half), the forge is given it, the re-run
// bootstraps Flux over SSH at clusters/production and every Kustomization
// is Ready in dependsOn order. A further create changes nothing; destroy
// removes the VMs and their nodes.
func TestCreateProductionOnSimulatedProxmoxFromNothing(t *testing.T) {
	// Beside TestGivenHosts (other nodes, other addresses): most of this
	// scenario is waiting for K3s and Flux, not using the CPU.
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	logf := func(f string, a ...any) { t.Logf(f, a...) }
	kubeBin, err := testbed.BuildKube(ctx, testbed.CacheDir(), logf)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := testbed.BuildFlux(ctx, testbed.CacheDir(), logf)
	if err != nil {
		t.Fatal(err)
	}
	fluxTars, err := bed.FluxImages(ctx, fb)
	if err != nil {
		t.Fatal(err)
	}
	sim := pveBackedByBed(t, kubeBin, fluxTars)
	ips := []string{"172.30.20.61", "172.30.20.62", "172.30.20.63"}
	for i := range ips {
		name := fmt.Sprintf("kube-srv-%d", i+1)
		t.Cleanup(func() { _ = bed.RemoveNode(context.Background(), name) })
	}
	forge, _, repoURL := gitOverSSH(t, ctx)
	// The profile's DNS record, answered by a DNS server on loopback
	// (verify asks it with --dns-server, never a real resolver).
	const record = "apps.e2e.labctl.test"
	dns := dnstest.New(t)
	dns.Set(record, ips...)
	dns.Set(apiRecord, ips[0])
	fluxYAML := fmt.Sprintf(`  dns:
    domain: e2e.labctl.test
    records:
      - {name: %s, targets: [%s]}
  flux:
    url: %s
    branch: main
    knownHostsFile: %s
    version: %s
    manifests: %s
    components: [%s]
    kustomizations:
      - {name: infrastructure-controllers, path: infrastructure/controllers/production}
      - {name: infrastructure-configs, path: infrastructure/configs/production, dependsOn: [infrastructure-controllers]}
      - {name: apps, path: apps/production, dependsOn: [infrastructure-configs]}
      - {name: monitoring-controllers, path: monitoring/controllers/production}
`, record, strings.Join(ips, ", "), repoURL, forge.KnownHosts(forge.HostKey), testbed.FluxVersion, filepath.Join(fb.Manifests, "install"), strings.Join(testbed.FluxComponents, ", "))
	file := productionE2EProfile(t, sim, serveK3s(t, kubeBin), ips, fluxYAML)
	env := map[string]string{"LABCTL_E2E_PVE_TOKEN": "root@pam!labctl=e2e-3c1f"}
	// CLOUDFLARE_API_TOKEN and SOPS_AGE_KEY: set for the package in TestMain.
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	state := t.TempDir()
	// No --accept-new-host-keys: labctl reads each new VM's host key
	// through the guest agent.
	opts := commands.CreateOptions{NoFlux: true, Kubeconfig: kc, StateDir: state,
		Proxmox: commands.ProxmoxOptions{Lookup: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}}

	out, first, err := runCreate(t, ctx, "create production-e2e --no-flux (from nothing)", file, opts)
	if err != nil {
		t.Fatal(err)
	}
	wall, critical := wallAndCritical(t, out)
	t.Logf("production-e2e from nothing: %s; wall %s / critical path %s = %.3f (simulated PVE latencies %+v)", first.Round(time.Millisecond), wall, critical, float64(wall)/float64(critical), pveLatency)
	if strings.Contains(out, "e2e-3c1f") {
		t.Error("the API token's secret reached the output")
	}

	if !strings.Contains(out, "kube-srv-1: recorded host key ssh-ed25519") {
		t.Errorf("no host key learned through the guest agent:\n%s", out)
	}
	vms := sim.VMs()
	if len(vms) != 3 {
		t.Fatalf("%d VMs", len(vms))
	}
	for i, vm := range vms {
		if vm.VMID != 201+i || vm.Status != "running" || vm.Address.Addr().String() != ips[i] || vm.CIUser != "ronald" || vm.Config["cores"] != "2" || !strings.Contains(vm.Config["scsi0"], "size=32G") {
			t.Errorf("VM %d: %+v", vm.VMID, vm)
		}
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://"+ips[0]+":6443" {
		t.Errorf("kubeconfig server %s", cfg.Host)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if ready := readyServers(t, ctx, cs); strings.Join(ready, ",") != "kube-srv-1,kube-srv-2,kube-srv-3" {
		t.Errorf("Ready etcd Nodes: %v", ready)
	}
	for _, n := range []string{"kube-srv-1", "kube-srv-2", "kube-srv-3"} {
		// iscsid cannot run in the bed (its kernel lacks iscsi_tcp): the
		// flow warns, as the prerequisites e2e shows.
		got, err := bed.Exec(ctx, n, "sh", "-c", "dpkg-query -W -f '${Status}' open-iscsi; echo; test -d /var/lib/longhorn && echo data-path; ls /root/.ssh/authorized_keys 2>&1 | grep -c 'No such'")
		if err != nil || got != "install ok installed\ndata-path\n1" {
			t.Errorf("%s: open-iscsi, data path, root without keys: %q %v", n, got, err)
		}
	}
	homelabSettingsInPlace(t, ctx, cs, []string{"kube-srv-1", "kube-srv-2", "kube-srv-3"})

	// Flux. The deploy key labctl generates is not known to the forge yet.
	opts.NoFlux = false
	_, _, err = runCreate(t, ctx, "create production-e2e (deploy key not yet added)", file, opts)
	keyPEM, rerr := os.ReadFile(filepath.Join(state, "production-e2e", "flux-deploy-key"))
	if rerr != nil {
		t.Fatalf("generated deploy key: %v (create: %v)", rerr, err)
	}
	signer, perr := ssh.ParsePrivateKey(keyPEM)
	if perr != nil {
		t.Fatal(perr)
	}
	public := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	if err == nil || !strings.Contains(err.Error(), "the deploy key may lack write access to "+repoURL) || !strings.Contains(err.Error(), public) {
		t.Fatalf("create with an unknown deploy key: %v", err)
	}
	// The operator adds the deploy key with write access at the forge.
	if err := os.WriteFile(forge.AuthorizedKeys, []byte(public+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	firstReady := map[string]time.Time{}
	var watchMu sync.Mutex
	watchCtx, stopWatch := context.WithCancel(ctx)
	go watchReady(watchCtx, kc, "production-e2e", firstReady, &watchMu)
	out, withFlux, err := runCreate(t, ctx, "create production-e2e (Flux over SSH)", file, opts)
	stopWatch()
	if err != nil {
		t.Fatal(err)
	}
	pollReady(ctx, kc, "production-e2e", firstReady, &watchMu)
	for _, secret := range []string{"e2e-cloudflare-not-a-token", "AGE-SECRET-KEY-E2E", "PRIVATE KEY"} {
		if strings.Contains(out, secret) {
			t.Errorf("%s reached the output", secret)
		}
	}
	watchMu.Lock()
	for _, k := range []string{"flux-system", "infrastructure-controllers", "infrastructure-configs", "apps", "monitoring-controllers"} {
		if firstReady[k].IsZero() {
			t.Errorf("%s never Ready", k)
		}
	}
	for _, pair := range [][2]string{{"infrastructure-controllers", "infrastructure-configs"}, {"infrastructure-configs", "apps"}} {
		if a, b := firstReady[pair[0]], firstReady[pair[1]]; b.Before(a) {
			t.Errorf("%s first Ready at %s, before %s it depends on (%s)", pair[1], b.Format(time.TimeOnly), pair[0], a.Format(time.TimeOnly))
		}
	}
	t.Logf("Flux bootstrapped over SSH in %s; first seen Ready: %v", withFlux.Round(time.Millisecond), firstReady)
	watchMu.Unlock()
	if log, err := exec.Command("git", "--git-dir", repoBare(repoURL), "log", "-1", "--format=%s", "--", "clusters/production/flux-system").CombinedOutput(); err != nil || len(log) == 0 {
		t.Errorf("no flux-system commit at clusters/production: %q %v", log, err)
	}
	if got := forge.Accepted(); got < 2 {
		t.Errorf("the forge logged %d key logins (labctl's push and source-controller's pulls expected)", got)
	}

	before := len(sim.Requests())
	out, again, err := runCreate(t, ctx, "create production-e2e (again)", file, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, ", 0 changes") {
		t.Errorf("the re-run made changes:\n%s", out)
	}
	for _, r := range sim.Requests()[before:] {
		if !strings.HasPrefix(r, "GET ") {
			t.Errorf("the re-run sent %s to Proxmox", r)
		}
	}
	t.Logf("production-e2e: from nothing %s (no Flux), with Flux %s, no-op re-run %s", first.Round(time.Millisecond), withFlux.Round(time.Millisecond), again.Round(time.Millisecond))

	// The same cluster goes on: verify and its faults, rebuilds,
	// upgrades, the restore, a removed member.
	v := &verifier{file: file, opts: commands.VerifyOptions{DNSServer: dns.Addr, Kubeconfig: kc, StateDir: state, Proxmox: opts.Proxmox}}
	start := time.Now()
	productionVerifyE2E(t, ctx, v, dns, cs, record, ips)
	t.Logf("verify scenarios: %s", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	rebuildE2E(t, ctx, sim, file, kc, state, opts.Proxmox, env, v)
	t.Logf("rebuild scenarios: %s", time.Since(start).Round(time.Millisecond))

	var dout bytes.Buffer
	e := commands.Env{Stdout: &dout, Stderr: &dout, Output: commands.OutputText, Now: time.Now}
	start = time.Now()
	if err := commands.Destroy(ctx, e, commands.ProfileArg{File: file}, commands.DestroyOptions{Yes: true, Kubeconfig: kc, Proxmox: opts.Proxmox}); err != nil {
		t.Fatalf("destroy: %v\n%s", err, dout.String())
	}
	t.Logf("destroy: %s\n%s", time.Since(start).Round(time.Millisecond), dout.String())
	if n := len(sim.VMs()); n != 0 {
		t.Errorf("%d VMs after destroy", n)
	}
	if ps, _ := bed.Docker.Output(ctx, "ps", "-a", "--filter", "name=kube-srv", "--format", "{{.Names}}"); strings.TrimSpace(ps) != "" {
		t.Errorf("node containers after destroy: %s", ps)
	}
	if !strings.Contains(dout.String(), "3 host key lines of the VMs in") || !strings.Contains(dout.String(), `+ remove context "production-e2e"`) {
		t.Errorf("destroy output:\n%s", dout.String())
	}
}

// repoBare is the repository path of an ssh:// URL.
func repoBare(u string) string {
	_, rest, _ := strings.Cut(strings.TrimPrefix(u, "ssh://"), "/")
	return "/" + rest
}

package verify

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/internal/golden"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/k3s"
	"github.com/labctl/labctl/provision/prereq"
)

var now = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

func production(t *testing.T) *profiles.Spec {
	t.Helper()
	l, err := profiles.Loader{}.Load("production")
	if err != nil {
		t.Fatal(err)
	}
	return &l.Spec
}

// healthy is what a verify run reads of a production cluster that is
// what its profile says.
func healthy(s *profiles.Spec) Observed {
	o := Observed{Now: now, VMs: map[string]facts.VM{}, Hosts: map[string]Host{}, HTTP: map[string]string{}, DNS: map[string]facts.DNSAnswer{}}
	e := &facts.Etcd{Via: s.Nodes[0].Name, Leader: "1"}
	a := &facts.API{Ingress: &facts.Service{Namespace: "kube-system", Name: "traefik", Type: "LoadBalancer"}, Grafana: true,
		StorageClasses: []facts.StorageClass{{Name: "local-path"}, {Name: "longhorn", Default: true}},
		Longhorn:       &facts.Longhorn{Replicas: "3", DataPath: s.Storage.Longhorn.DataPath}}
	for i, n := range s.Nodes {
		o.VMs[n.Name] = facts.VM{Exists: true, VMID: 201 + i, Running: true, Managed: true, Configured: true}
		pre := prereq.Facts{"os": "debian 12", "kernel": "6.1.0-28-amd64", "modules.loadable": "yes", "iscsid.enabled": "enabled", "iscsid.active": "active",
			"modules.persisted": "iscsi_tcp dm_crypt", "multipath.installed": "no", "datapath": "yes"}
		for _, p := range prereq.Packages {
			pre["pkg."+p] = "install ok installed"
		}
		for _, m := range prereq.Modules {
			pre["mod."+m] = "loaded"
		}
		want := prereq.WantFor(s, n)
		for k, v := range want.Sysctl {
			pre["sysctl."+k] = v
		}
		pre["sysctl.file"] = base64.StdEncoding.EncodeToString([]byte(want.SysctlConf()))
		pre["journald.file"] = base64.StdEncoding.EncodeToString([]byte(want.JournaldConf()))
		pre["journald.persistent"] = "yes"
		o.Hosts[n.Name] = Host{
			Prereq: pre,
			K3s:    facts.K3s{Installed: true, Unit: "k3s", Active: true, Version: s.K3s.Version, HasData: true, Config: k3s.NodeConfig(s, n, nil).Render()},
			Disks: []Disk{{Path: "/", Device: "/dev/sda1", SizeKB: 32 << 20, UsedKB: 8 << 20, FreeKB: 24 << 20},
				{Path: s.Storage.Longhorn.DataPath, Device: "/dev/sdb1", SizeKB: 200 << 20, UsedKB: 20 << 20, FreeKB: 180 << 20},
				{Path: k3s.DBDir, Device: "/dev/nvme0n1p2", SizeKB: 32 << 20, UsedKB: 8 << 20, FreeKB: 24 << 20}},
			InotifyWatches: 524288, InotifyInstances: 8192,
			EtcdMount: "/dev/nvme0n1p2 ext4 /", EtcdRotational: "0",
			WALFsync: map[float64]float64{0.001: 900, 0.002: 995, 0.004: 1000, math.Inf(1): 1000},
			Probe:    900 * time.Microsecond,
			Certs: []Cert{{Path: k3s.DataDir + "/server/tls/serving-kube-apiserver.crt", NotAfter: now.AddDate(0, 11, 0)},
				{Path: k3s.DataDir + "/server/tls/server-ca.crt", NotAfter: now.AddDate(10, 0, 0)}},
			Clock: now.Add(time.Duration(i) * 20 * time.Millisecond), Sent: now.Add(-5 * time.Millisecond), Received: now.Add(5 * time.Millisecond),
		}
		e.Members = append(e.Members, facts.Member{ID: string(rune('1' + i)), Name: n.Name + "-0a1b2c3d", PeerURLs: []string{facts.PeerURL(n.Address)},
			ClientURLs: []string{"https://" + n.Address + ":2379"}, Answers: true, Healthy: true, DBSize: 24 << 20})
		a.Nodes = append(a.Nodes, facts.KubeNode{Name: n.Name, Ready: true, Roles: []string{"control-plane", "etcd", "master"}, Address: n.Address})
		a.Secrets = append(a.Secrets, "kube-system/"+n.Name+facts.NodePasswordSuffix)
		a.Ingress.IPs = append(a.Ingress.IPs, n.Address)
		o.HTTP[n.Address+":80"] = ""
	}
	a.Secrets = append(a.Secrets, "cert-manager/cloudflare-api-token", "flux-system/sops-age", "monitoring/kube-prometheus-stack-grafana")
	for _, sec := range SecretNames(s) {
		if !slices.Contains(a.Secrets, sec) {
			a.Secrets = append(a.Secrets, sec)
		}
	}
	o.Etcd, o.API = e, a
	f := &facts.FluxState{URL: s.Flux.URL, Branch: s.Flux.Branch, Path: "./" + s.Flux.Path, Revision: "main@sha1:4f2a", SourceReady: true}
	f.Kustomization = append(f.Kustomization, facts.Kustomization{Namespace: "flux-system", Name: "flux-system", Path: "./" + s.Flux.Path, Ready: true, Applied: f.Revision})
	for _, k := range s.Flux.Kustomizations {
		f.Kustomization = append(f.Kustomization, facts.Kustomization{Namespace: "flux-system", Name: k.Name, Path: "./" + k.Path, DependsOn: k.DependsOn, Ready: true, Applied: f.Revision})
	}
	o.Flux = f
	for _, r := range s.DNS.Records {
		o.DNS[r.Name] = facts.DNSAnswer{Addrs: slices.Clone(r.Targets)}
	}
	return o
}

func text(t *testing.T, r Report) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := WriteText(&b, r); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// A cluster that is what its profile says passes every check; the table
// is pinned.
func TestHealthyProductionClusterPassesEveryCheck(t *testing.T) {
	s := production(t)
	r := Nodes(s, healthy(s))
	if bad := r.NotOK(); len(bad) != 0 {
		t.Errorf("not ok: %v", bad)
	}
	if r.Failed() {
		t.Error("Failed() on a healthy cluster")
	}
	groupsSeen := map[string]bool{}
	for _, c := range r.Checks {
		groupsSeen[c.Group] = true
	}
	for _, g := range groups {
		if !groupsSeen[g] {
			t.Errorf("no %s check", g)
		}
	}
	golden.Assert(t, "testdata/healthy.txt", text(t, r))
}

// Each fault is found by its own check, and only that one is not ok.
func TestEachFaultIsFoundByItsCheckAlone(t *testing.T) {
	s := production(t)
	n1, n2, n3 := s.Nodes[0].Name, s.Nodes[1].Name, s.Nodes[2].Name
	host := func(o *Observed, name string, fn func(h *Host)) {
		h := o.Hosts[name]
		fn(&h)
		o.Hosts[name] = h
	}
	cases := []struct {
		name  string
		fault func(o *Observed)
		want  []string
	}{
		{"VM stopped", func(o *Observed) { v := o.VMs[n2]; v.Running = false; o.VMs[n2] = v }, []string{"fail Machines/vm/" + n2}},
		{"host key changed", func(o *Observed) {
			o.ConnErr = map[string]error{n3: errors.New("host key mismatch")}
			delete(o.Hosts, n3)
		},
			[]string{"fail Machines/ssh/" + n3}},
		{"iscsid stopped", func(o *Observed) { host(o, n1, func(h *Host) { h.Prereq["iscsid.active"] = "inactive" }) }, []string{"fail Hosts/iscsid/" + n1}},
		{"inotify at the kernel's default, live", func(o *Observed) {
			host(o, n2, func(h *Host) { h.Prereq["sysctl.fs.inotify.max_user_watches"] = "8192" })
		}, []string{"fail Hosts/sysctl fs.inotify.max_user_watches/" + n2}},
		{"journal in memory only", func(o *Observed) { host(o, n3, func(h *Host) { h.Prereq["journald.persistent"] = "no" }) }, []string{"fail Hosts/journald/" + n3}},
		{"K3s version drift", func(o *Observed) { host(o, n2, func(h *Host) { h.K3s.Version = "v1.33.1+k3s1" }) }, []string{"fail K3s/version/" + n2}},
		{"config.yaml drift", func(o *Observed) {
			host(o, n3, func(h *Host) { h.K3s.Config = append(h.K3s.Config, []byte("tls-san:\n  - extra.example\n")...) })
		}, []string{"fail K3s/config.yaml/" + n3}},
		{"K3s stopped on one server", func(o *Observed) { host(o, n2, func(h *Host) { h.K3s.Active = false }) }, []string{"fail K3s/service/" + n2}},
		{"certificate expires in 10 days", func(o *Observed) { host(o, n1, func(h *Host) { h.Certs[0].NotAfter = now.Add(10 * 24 * time.Hour) }) },
			[]string{"fail K3s/certificates/" + n1}},
		{"certificate expires in 100 days", func(o *Observed) { host(o, n1, func(h *Host) { h.Certs[0].NotAfter = now.Add(100 * 24 * time.Hour) }) },
			[]string{"warn K3s/certificates/" + n1}},
		{"data path full", func(o *Observed) {
			host(o, n2, func(h *Host) { h.Disks[1].UsedKB, h.Disks[1].FreeKB = 199<<20, 1<<20 })
		},
			[]string{"fail Hosts/disk " + s.Storage.Longhorn.DataPath + "/" + n2}},
		{"root disk 85% used", func(o *Observed) { host(o, n3, func(h *Host) { h.Disks[0].UsedKB, h.Disks[0].FreeKB = 27<<20, 5<<20 }) },
			[]string{"warn Hosts/disk //" + n3}},
		{"inotify at the kernel's defaults", func(o *Observed) { host(o, n1, func(h *Host) { h.InotifyWatches, h.InotifyInstances = 8192, 128 }) },
			[]string{"warn Hosts/inotify limits/" + n1}},
		{"clock 3 s ahead", func(o *Observed) { host(o, n3, func(h *Host) { h.Clock = h.Clock.Add(3 * time.Second) }) }, []string{"warn Hosts/clock/cluster"}},
		{"etcd on a slow SD card", func(o *Observed) {
			host(o, n2, func(h *Host) {
				h.EtcdRotational = "1"
				h.WALFsync = map[float64]float64{0.008: 10, 0.016: 500, 0.032: 1000, math.Inf(1): 1000}
			})
		}, []string{"warn etcd/data/" + n2, "warn etcd/write latency/" + n2}},
		{"slow probe without the metric", func(o *Observed) {
			host(o, n1, func(h *Host) { h.WALFsync = map[float64]float64{}; h.Probe = 25 * time.Millisecond })
		}, []string{"warn etcd/write latency/" + n1}},
		{"an etcd member removed", func(o *Observed) {
			o.Etcd.Members = o.Etcd.Members[:2]
		}, []string{"fail etcd/members/cluster", "fail etcd/failure margin/cluster"}},
		{"a learner left", func(o *Observed) { o.Etcd.Members[2].Learner = true }, []string{"fail etcd/members/cluster", "fail etcd/failure margin/cluster"}},
		{"no leader", func(o *Observed) { o.Etcd.Leader = "" }, []string{"fail etcd/leader/cluster"}},
		{"database near the quota", func(o *Observed) { o.Etcd.Members[0].DBSize = 1900 << 20 }, []string{"warn etcd/database size/cluster"}},
		{"a stale Node", func(o *Observed) {
			o.API.Nodes = append(o.API.Nodes, facts.KubeNode{Name: "kube-old", Ready: false})
			o.API.Secrets = append(o.API.Secrets, "kube-system/kube-old"+facts.NodePasswordSuffix)
		}, []string{"fail Kubernetes/stale nodes/cluster"}},
		{"an orphan node-password Secret", func(o *Observed) {
			o.API.Secrets = append(o.API.Secrets, "kube-system/kube-gone"+facts.NodePasswordSuffix)
		},
			[]string{"warn Kubernetes/node passwords/cluster"}},
		{"a Node not Ready", func(o *Observed) { o.API.Nodes[1].Ready, o.API.Nodes[1].Why = false, "KubeletNotReady: PLEG" }, []string{"fail Kubernetes/node/" + n2}},
		{"local-path still the default", func(o *Observed) { o.API.StorageClasses[0].Default = true }, []string{"fail Storage/default class/cluster"}},
		{"Longhorn not installed yet", func(o *Observed) { o.API.Longhorn = nil }, []string{"warn Storage/longhorn/cluster"}},
		{"Longhorn with 2 replicas", func(o *Observed) { o.API.Longhorn.Replicas = "2" }, []string{"fail Storage/longhorn/cluster"}},
		{"Traefik on one address", func(o *Observed) { o.API.Ingress.IPs = o.API.Ingress.IPs[:1] }, []string{"fail Ingress/traefik service/cluster"}},
		{"port 80 silent on one node", func(o *Observed) { o.HTTP[s.Nodes[2].Address+":80"] = "connection refused" },
			[]string{"fail Ingress/http/" + s.Nodes[2].Address + ":80"}},
		{"a Kustomization broken by a bad commit", func(o *Observed) {
			k := &o.Flux.Kustomization[len(o.Flux.Kustomization)-1]
			k.Ready, k.Reason, k.Message = false, "BuildFailed", "kustomize build failed: accumulating resources"
		}, []string{"fail Flux/kustomization/" + s.Flux.Kustomizations[len(s.Flux.Kustomizations)-1].Name}},
		{"a Kustomization behind the source", func(o *Observed) { o.Flux.Kustomization[1].Applied = "main@sha1:0000" },
			[]string{"warn Flux/kustomization/" + s.Flux.Kustomizations[0].Name}},
		{"flux-system on the staging path", func(o *Observed) { o.Flux.Path = "./clusters/staging" }, []string{"fail Flux/sync/flux-system"}},
		{"a Kustomization the profile does not list", func(o *Observed) {
			o.Flux.Kustomization = append(o.Flux.Kustomization, facts.Kustomization{Namespace: "flux-system", Name: "monitoring-configs", Path: "./monitoring/configs", DependsOn: []string{"monitoring-controllers"}, Ready: true, Applied: o.Flux.Revision})
		}, []string{"warn Flux/graph/monitoring-configs"}},
		{"a dependsOn the profile does not expect", func(o *Observed) { o.Flux.Kustomization[2].DependsOn = nil },
			[]string{"warn Flux/graph/" + s.Flux.Kustomizations[1].Name}},
		{"the sops-age Secret missing", func(o *Observed) {
			o.API.Secrets = slices.DeleteFunc(o.API.Secrets, func(s string) bool { return s == "flux-system/sops-age" })
		}, []string{"fail Secrets/secret/flux-system/sops-age"}},
		{"a DNS record pointing elsewhere", func(o *Observed) {
			o.DNS[s.DNS.Records[0].Name] = facts.DNSAnswer{Addrs: []string{"10.0.40.99"}}
		}, []string{"fail DNS/record/" + s.DNS.Records[0].Name}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := healthy(s)
			c.fault(&o)
			r := Nodes(s, o)
			got := r.NotOK()
			if !slices.Equal(got, c.want) {
				t.Errorf("not ok:\n got %v\nwant %v\n%s", got, c.want, text(t, Report{Checks: notOK(r)}))
			}
		})
	}
}

func notOK(r Report) []Check {
	var out []Check
	for _, c := range r.Checks {
		if c.Status != OK {
			out = append(out, c)
		}
	}
	return out
}

// The faults' lines say what was observed and what was expected; pinned.
func TestFaultLinesSayWhatWasObservedAndExpected(t *testing.T) {
	s := production(t)
	o := healthy(s)
	n := s.Nodes[1].Name
	h := o.Hosts[n]
	h.K3s.Version = "v1.33.1+k3s1"
	h.Certs[0].NotAfter = now.Add(10 * 24 * time.Hour)
	h.InotifyWatches, h.InotifyInstances = 8192, 128
	o.Hosts[n] = h
	o.Etcd.Members = o.Etcd.Members[:2]
	o.DNS[s.DNS.Records[0].Name] = facts.DNSAnswer{Addrs: []string{"10.0.40.99"}}
	golden.Assert(t, "testdata/faults.txt", text(t, Report{Checks: notOK(Nodes(s, o))}))
}

// The host script runs under a plain sh, changes nothing but its own
// probe file, and its output parses.
func TestHostScriptRunsAndParses(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	data := t.TempDir()
	want := prereq.Want{Longhorn: true, DataPath: data, Sysctl: map[string]string{"fs.inotify.max_user_watches": "524288"},
		Journald: &profiles.Journald{Persistent: true}, EtcdMount: data}
	out, err := exec.CommandContext(context.Background(), "sh", "-c", HostScript(want)).Output()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	h, err := ParseHost(string(out))
	if err != nil {
		t.Fatal(err)
	}
	if h.Prereq["os"] == "" || h.Clock.IsZero() || h.InotifyWatches == 0 {
		t.Errorf("parsed %+v", h)
	}
	// The tuning's facts reach the prerequisites' assessment.
	for _, k := range []string{"sysctl.fs.inotify.max_user_watches", "journald.persistent", "etcdmount.mounted", "etcdmount.bound"} {
		if h.Prereq[k] == "" {
			t.Errorf("fact %s not parsed from the host script", k)
		}
	}
	paths := []string{}
	for _, d := range h.Disks {
		paths = append(paths, d.Path)
		if d.SizeKB == 0 || d.Device == "" {
			t.Errorf("disk %+v", d)
		}
	}
	if !slices.Contains(paths, "/") || !slices.Contains(paths, data) {
		t.Errorf("disks %v, want / and %s", paths, data)
	}
	if entries, _ := os.ReadDir(data); len(entries) != 0 {
		t.Errorf("the script left %v in the data path", entries)
	}
	if d := time.Since(h.Clock); d < 0 || d > time.Minute {
		t.Errorf("clock %v", h.Clock)
	}
}

// A real host's output: the K3s part, df, etcd's metric, the probe and
// certificates are read.
func TestParseHostReadsEverySection(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "host.txt"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseHost(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	if !h.K3s.Installed || !h.K3s.Active || h.K3s.Version != "v1.34.4+k3s1" || h.K3sErr != "" {
		t.Errorf("K3s %+v (%s)", h.K3s, h.K3sErr)
	}
	if h.InotifyWatches != 524288 || h.InotifyInstances != 512 {
		t.Errorf("inotify %d %d", h.InotifyWatches, h.InotifyInstances)
	}
	if len(h.Disks) != 3 || h.Disks[1].UsedPercent() != 96 {
		t.Errorf("disks %+v", h.Disks)
	}
	p99, n, ok := h.WALp99()
	if !ok || p99 != 4*time.Millisecond || n != 1200 {
		t.Errorf("WAL p99 %s over %v (%v)", p99, n, ok)
	}
	if h.Probe != 1500*time.Microsecond {
		t.Errorf("probe %s", h.Probe)
	}
	if len(h.Certs) != 2 || h.Certs[0].NotAfter.Format(time.DateOnly) != "2027-12-06" {
		t.Errorf("certs %+v", h.Certs)
	}
	if h.EtcdMount != "/dev/nvme0n1p2 ext4 /" || h.EtcdRotational != "0" {
		t.Errorf("etcd mount %q rota %q", h.EtcdMount, h.EtcdRotational)
	}
	if _, err := ParseHost("sh: 1: syntax error\n"); err == nil || !strings.Contains(err.Error(), "syntax error") {
		t.Errorf("garbage: %v", err)
	}
}

// The clock is compared within the command's round trip less the
// script's own run time: a slow script does not widen the window.
func TestClockWindowLeavesOutTheScriptsRunTime(t *testing.T) {
	h := Host{Sent: now, Received: now.Add(3 * time.Second), started: now.Add(100 * time.Millisecond), Clock: now.Add(2900 * time.Millisecond)}
	mid, half := h.clockWindow()
	if half != 100*time.Millisecond || !mid.Equal(now.Add(2900*time.Millisecond)) {
		t.Errorf("window %s ± %s", mid.Sub(now), half)
	}
	out := "os=debian 12\nclock.start=1796558400000000000\nclock=1796558402000000000\n"
	p, err := ParseHost(out)
	if err != nil || p.Clock.Sub(p.started) != 2*time.Second {
		t.Errorf("parsed start %v end %v: %v", p.started, p.Clock, err)
	}
}

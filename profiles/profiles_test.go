package profiles

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/labctl/labctl/internal/golden"
)

func load(t *testing.T, name string) *Loaded {
	t.Helper()
	l, err := Loader{}.Load(name)
	if err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	return l
}

// The embedded defaults carry the architecture document's facts; this
// test is the checklist.
func TestEmbeddedProductionCarriesArchitectureFacts(t *testing.T) {
	p := load(t, "production").Spec
	var addrs []string
	for _, n := range p.Nodes {
		addrs = append(addrs, n.Address)
		if n.Role != RoleServer {
			t.Errorf("%s: role %s, want server (3 servers with embedded etcd)", n.Name, n.Role)
		}
	}
	if got := strings.Join(addrs, ","); got != "10.0.40.101,10.0.40.102,10.0.40.103" {
		t.Errorf("node addresses = %s", got)
	}
	if p.Environment != EnvProduction || p.Proxmox == nil || p.K3d != nil {
		t.Errorf("environment %q, proxmox %v, k3d %v", p.Environment, p.Proxmox != nil, p.K3d != nil)
	}
	if len(p.K3s.Disable) != 0 || p.Ingress.Controller != "traefik" || p.Ingress.LoadBalancer != "servicelb" {
		t.Errorf("Traefik and ServiceLB must stay enabled: disable=%v ingress=%+v", p.K3s.Disable, p.Ingress)
	}
	lh := p.Storage.Longhorn
	if p.Storage.DefaultClass != "longhorn" || lh == nil || lh.Replicas != 3 || lh.DataPath != "/var/lib/longhorn" || lh.ReplicaAntiAffinity || lh.AutoBalance != "least-effort" {
		t.Errorf("storage = %+v %+v", p.Storage, lh)
	}
	if p.Flux.Path != "clusters/production" || p.Proxmox.TokenRef.Env != "PROXMOX_VE_API_TOKEN" || p.Certificates.DNS01.APITokenRef.IsZero() {
		t.Errorf("flux path %q, proxmox token %v, dns01 token %v", p.Flux.Path, p.Proxmox.TokenRef, p.Certificates.DNS01.APITokenRef)
	}
	wantDNS := []string{"linkding.ronaldlokers.nl", "longhorn.ronaldlokers.nl", "grafana.ronaldlokers.nl"}
	for i, r := range p.DNS.Records {
		if r.Name != wantDNS[i] || len(r.Targets) != 3 {
			t.Errorf("dns record %d = %+v", i, r)
		}
	}
	assertOrder(t, p.Flux.Kustomizations, "production")
}

func TestEmbeddedStagingCarriesArchitectureFacts(t *testing.T) {
	p := load(t, "staging").Spec
	k := p.K3d
	if k == nil || k.Servers != 1 || k.Agents != 3 || k.APIHost != "10.0.40.52" || k.DockerHost != "ssh://ronald@10.0.40.52" {
		t.Fatalf("k3d = %+v", k)
	}
	want := []K3dPort{{80, 80, "loadbalancer"}, {443, 443, "loadbalancer"}}
	if !reflect.DeepEqual(k.Ports, want) {
		t.Errorf("ports = %+v, want 80 and 443 on the load balancer", k.Ports)
	}
	if k.Image != "docker.io/rancher/k3s:v1.33.4-k3s1" || k.ClusterName != "staging" {
		t.Errorf("defaults: image %q cluster %q", k.Image, k.ClusterName)
	}
	if p.Storage.DefaultClass != "local-path" || p.Storage.LocalPath.Path != "/var/lib/rancher/k3s/storage" || p.Ingress.Controller != "traefik" {
		t.Errorf("storage %+v ingress %+v", p.Storage, p.Ingress)
	}
	for _, r := range p.DNS.Records {
		if !reflect.DeepEqual(r.Targets, []string{"10.0.40.52"}) || !strings.HasSuffix(r.Name, ".staging.ronaldlokers.nl") {
			t.Errorf("dns record %+v", r)
		}
	}
	if p.Flux.Path != "clusters/staging" {
		t.Errorf("flux path %q", p.Flux.Path)
	}
	assertOrder(t, p.Flux.Kustomizations, "staging")
}

// assertOrder checks controllers → configs → apps, monitoring independent.
func assertOrder(t *testing.T, ks []FluxKustomization, env string) {
	t.Helper()
	deps := map[string][]string{}
	for _, k := range ks {
		deps[k.Name] = k.DependsOn
		if !strings.HasSuffix(k.Path, "/"+env) {
			t.Errorf("%s: path %s is not the %s overlay", k.Name, k.Path, env)
		}
	}
	want := map[string][]string{
		"infrastructure-controllers": nil,
		"infrastructure-configs":     {"infrastructure-controllers"},
		"apps":                       {"infrastructure-configs"},
		"monitoring-controllers":     nil,
	}
	for name, d := range want {
		got, ok := deps[name]
		if !ok || !reflect.DeepEqual(got, d) {
			t.Errorf("kustomization %s dependsOn %v (present %v), want %v", name, got, ok, d)
		}
	}
}

// Each file under testdata/invalid has one defect; its .golden file pins
// the exact message: file, line, field path and what to do.
func TestInvalidProfilesAreRejectedWithPreciseMessages(t *testing.T) {
	files, _ := filepath.Glob("testdata/invalid/*.yaml")
	if len(files) < 15 {
		t.Fatalf("found %d invalid fixtures", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := Loader{}.LoadFile(f)
			if err == nil {
				t.Fatal("loaded without error")
			}
			var inv *InvalidError
			if !errors.As(err, &inv) {
				t.Fatalf("err %T %v, want *InvalidError", err, err)
			}
			for _, p := range inv.Problems {
				if p.File == "" || (p.Line == 0 && !strings.HasSuffix(f, "empty.yaml")) {
					t.Errorf("problem without file or line: %+v", p)
				}
			}
			golden.Assert(t, strings.TrimSuffix(f, ".yaml")+".golden", []byte(err.Error()+"\n"))
		})
	}
}

func TestUserProfileExtendsAndShadowsEmbedded(t *testing.T) {
	dir := t.TempDir()
	// A user "production" that moves the nodes to another subnet: it
	// extends the embedded production of the same name.
	write(t, dir, "production.yaml", `apiVersion: labctl.dev/v1alpha1
kind: Profile
metadata: {name: production, description: my site}
extends: production
spec:
  network: {subnet: 192.168.50.0/24, gateway: 192.168.50.1}
  nodes:
    - {name: a, address: 192.168.50.11, role: server, vmid: 201}
    - {name: b, address: 192.168.50.12, role: server, vmid: 202}
    - {name: c, address: 192.168.50.13, role: server, vmid: 203}
`)
	write(t, dir, "lab.yaml", `apiVersion: labctl.dev/v1alpha1
kind: Profile
metadata: {name: lab}
extends: production
spec:
  proxmox: {template: debian-13-cloudinit}
`)
	ld := Loader{Dir: dir}
	lab, err := ld.Load("lab")
	if err != nil {
		t.Fatal(err)
	}
	if lab.Spec.Nodes[0].Address != "192.168.50.11" || lab.Spec.Proxmox.Template != "debian-13-cloudinit" || lab.Spec.Proxmox.Storage != "local-lvm" {
		t.Errorf("merge: nodes %+v proxmox %+v", lab.Spec.Nodes, lab.Spec.Proxmox)
	}
	want := []string{"embedded:production.yaml", filepath.Join(dir, "production.yaml"), filepath.Join(dir, "lab.yaml")}
	if !reflect.DeepEqual(lab.Sources, want) {
		t.Errorf("sources = %v, want %v", lab.Sources, want)
	}
	list, err := ld.List()
	if err != nil {
		t.Fatal(err)
	}
	var shadowed bool
	for _, e := range list {
		if e.Name == "production" {
			shadowed = e.Shadows && e.Description == "my site"
		}
	}
	if !shadowed {
		t.Errorf("list does not mark the user production as shadowing: %+v", list)
	}
}

func TestExtendsCycleIsRejected(t *testing.T) {
	dir := t.TempDir()
	for _, pair := range [][2]string{{"a", "b"}, {"b", "a"}} {
		write(t, dir, pair[0]+".yaml", fmt.Sprintf("apiVersion: labctl.dev/v1alpha1\nkind: Profile\nmetadata: {name: %s}\nextends: %s\n", pair[0], pair[1]))
	}
	_, err := Loader{Dir: dir}.Load("a")
	if err == nil || !strings.Contains(err.Error(), "extends chain loops") {
		t.Fatalf("err = %v", err)
	}
}

func TestShowRoundTripsThroughYAML(t *testing.T) {
	for _, name := range EmbeddedNames() {
		p := load(t, name)
		out, err := yaml.Marshal(p.Profile)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Loader{}.LoadBytes(name+"-shown.yaml", out)
		if err != nil {
			t.Fatalf("%s: shown profile does not load: %v\n%s", name, err, out)
		}
		if !reflect.DeepEqual(p.Profile, again.Profile) {
			t.Errorf("%s: round trip changed the profile", name)
		}
	}
}

func TestSecretIsNeverPrinted(t *testing.T) {
	const value = "s3cr3t-token-value"
	t.Setenv("LABCTL_TEST_TOKEN", value)
	s, err := SecretRef{Env: "LABCTL_TEST_TOKEN"}.Resolve(os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "%v %+v %#v %s %q %x", s, s, s, s, s, s)
	fmt.Fprint(&buf, s, struct{ Token Secret }{s})
	j, _ := json.Marshal(map[string]any{"token": s})
	buf.Write(j)
	y, _ := yaml.Marshal(map[string]any{"token": s})
	buf.Write(y)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("connect", "token", s)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("connect", "token", s)
	if strings.Contains(buf.String(), value) {
		t.Fatalf("secret leaked: %s", buf.String())
	}
	if s.Reveal() != value {
		t.Fatal("Reveal lost the value")
	}
}

func TestSecretRefResolveSaysWhatIsMissing(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "token", "abc\n")
	s, err := SecretRef{File: filepath.Join(dir, "token")}.Resolve(os.LookupEnv)
	if err != nil || s.Reveal() != "abc" {
		t.Fatalf("file secret = %q, %v", s.Reveal(), err)
	}
	for _, ref := range []SecretRef{{Env: "LABCTL_SURELY_UNSET"}, {File: filepath.Join(dir, "nope")}, {}} {
		_, err := ref.Resolve(os.LookupEnv)
		if !errors.Is(err, ErrSecretMissing) {
			t.Errorf("%v: err = %v, want ErrSecretMissing", ref, err)
		}
	}
}

func write(t *testing.T, dir, name, text string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// The committed schema is what Schema generates; `make golden` refreshes it.
func TestCommittedSchemaIsCurrent(t *testing.T) {
	b, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	golden.Assert(t, "profile.schema.json", b)
}

// A huge profile is refused before it is parsed, and a profile with
// very many problems lists a bounded number of them.
func TestSizeAndProblemCountAreCapped(t *testing.T) {
	big := bytes.Repeat([]byte("# padding\n"), MaxProfileSize/10+1)
	_, err := Loader{}.LoadBytes("big.yaml", big)
	if err == nil || !strings.Contains(err.Error(), "a profile is at most 1048576 (1 MiB)") {
		t.Fatalf("big profile: %v", err)
	}
	var b strings.Builder
	b.WriteString("apiVersion: labctl.dev/v1alpha1\nkind: Profile\nmetadata: {name: many}\nextends: production\nspec:\n  dns:\n    domain: ronaldlokers.nl\n    records:\n")
	for i := range 5000 {
		fmt.Fprintf(&b, "      - {name: bad_%d, targets: [nope]}\n", i)
	}
	_, err = Loader{}.LoadBytes("many.yaml", []byte(b.String()))
	var inv *InvalidError
	if !errors.As(err, &inv) || len(inv.Problems) != MaxProblems+1 || !strings.Contains(inv.Problems[MaxProblems].Msg, "and 9900 more problems") {
		t.Fatalf("many problems: %d listed", len(inv.Problems))
	}
}

// A k3d cluster's Docker host reached over SSH is a machine labctl logs
// in to as Docker's SSH helper does: the URL's user and port, straight to
// the host, with the profile's identities and known_hosts; any other
// Docker is not.
func TestDockerHostMachine(t *testing.T) {
	s := load(t, "staging").Spec
	if s.Hosts == nil || s.Hosts.Sysctl["fs.inotify.max_user_watches"] != "524288" || s.Hosts.Sysctl["fs.inotify.max_user_instances"] != "512" {
		t.Errorf("staging's Docker host tuning = %+v, want the inotify defaults", s.Hosts)
	}
	n, ssh, ok := s.DockerHostMachine()
	if !ok || n.Name != "10.0.40.52" || n.Address != "10.0.40.52" || n.Role != RoleDockerHost || ssh.User != "ronald" || ssh.Port != 0 {
		t.Errorf("staging: %+v %+v %v", n, ssh, ok)
	}
	s.SSH = &SSH{User: "someone", Port: 2200, JumpHost: "bastion", IdentityFiles: []string{"~/.ssh/id"}, KnownHostsFile: "kh"}
	s.K3d.DockerHost = "ssh://op@docker.lab.test:2222"
	n, ssh, ok = s.DockerHostMachine()
	want := SSH{User: "op", Port: 2222, IdentityFiles: []string{"~/.ssh/id"}, KnownHostsFile: "kh"}
	if !ok || n.Address != "docker.lab.test" || !reflect.DeepEqual(ssh, want) {
		t.Errorf("ssh://op@docker.lab.test:2222: %+v %+v %v, want %+v", n, ssh, ok, want)
	}
	if s.SSH.User != "someone" {
		t.Errorf("the profile's ssh section was changed: %+v", s.SSH)
	}
	for _, h := range []string{"", "unix:///var/run/docker.sock", "tcp://10.0.0.1:2376"} {
		s.K3d.DockerHost = h
		if _, _, ok := s.DockerHostMachine(); ok {
			t.Errorf("%q taken for a machine reached over SSH", h)
		}
	}
	if l := load(t, "local").Spec; l.Hosts != nil {
		t.Errorf("local (this machine's Docker) inherits staging's tuning: %+v", l.Hosts)
	}
}

package k3s

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/internal/golden"
	"github.com/labctl/labctl/profiles"
)

func production(t *testing.T) *profiles.Spec {
	t.Helper()
	l, err := profiles.Loader{}.Load("production")
	if err != nil {
		t.Fatal(err)
	}
	return &l.Spec
}

// Every rendered config.yaml and install command of the production
// profile is pinned: the first server initialises, the others join it.
func TestGoldenConfigAndInstallPerProductionNode(t *testing.T) {
	s := production(t)
	first := s.Nodes[0]
	for i, n := range s.Nodes {
		var join *profiles.Node
		if i > 0 {
			join = &first
		}
		c := NodeConfig(s, n, join)
		golden.Assert(t, fmt.Sprintf("testdata/production-%s.config.yaml", n.Name), c.Render())
		golden.Assert(t, fmt.Sprintf("testdata/production-%s.install.sh", n.Name), []byte(InstallFor(s, n).Command+"\n"))
	}
}

// The passthrough is rendered after labctl's own keys, sorted, on the
// servers (spec.k3s.config) and agents (agentConfig) only; an upgrade's
// drift names a changed passthrough key.
func TestGoldenPassthroughConfig(t *testing.T) {
	l, err := profiles.Loader{}.LoadFile("testdata/passthrough.profile.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := &l.Spec
	golden.Assert(t, "testdata/passthrough-server.config.yaml", NodeConfig(s, s.Nodes[1], &s.Nodes[0]).Render())
	golden.Assert(t, "testdata/passthrough-agent.config.yaml", NodeConfig(s, s.Agents()[0], &s.Nodes[0]).Render())
	old := NodeConfig(s, s.Nodes[1], &s.Nodes[0]).Render()
	s.K3s.Config["kubelet-arg"] = []any{"max-pods=200"}
	got := fmt.Sprint(ConfigDrift(old, NodeConfig(s, s.Nodes[1], nil)))
	if got != "[kubelet-arg [max-pods=150,image-gc-high-threshold=80] → [max-pods=200]]" {
		t.Errorf("drift of a passthrough key: %s", got)
	}
}

func TestGoldenAgentAndAirgapInstall(t *testing.T) {
	s := production(t)
	agent := profiles.Node{Name: "kube-agent-1", Address: "10.0.40.111", Role: profiles.RoleAgent}
	golden.Assert(t, "testdata/agent.config.yaml", NodeConfig(s, agent, &s.Nodes[0]).Render())
	s.K3s.Airgap = &profiles.Airgap{Binary: "/srv/k3s/k3s", InstallScript: "/srv/k3s/install.sh", Images: "/srv/k3s/k3s-airgap-images-amd64.tar.zst"}
	in := InstallFor(s, s.Nodes[0])
	var b strings.Builder
	for _, u := range in.Uploads {
		fmt.Fprintf(&b, "upload %s -> %s (%o)\n", u.Local, u.Remote, u.Mode)
	}
	b.WriteString(in.Command + "\n")
	golden.Assert(t, "testdata/airgap.install.txt", []byte(b.String()))
}

// critical is a config's values of the keys every server must share.
func critical(t *testing.T, c Config) string {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal(c.Render(), &m); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, k := range append(slices.Clone(Critical), "tls-san") {
		fmt.Fprintf(&b, "%s=%s ", k, renderValue(m[k]))
	}
	return b.String()
}

func TestCriticalSettingsAreEqualOnAllServersAndNoSecretIsRendered(t *testing.T) {
	s := production(t)
	s.K3s.Disable = []string{"metrics-server"}
	s.K3s.Config = profiles.K3sConfig{"disable-helm-controller": true, "secrets-encryption": true, "cluster-domain": "lab.internal"}
	want := NodeConfig(s, s.Nodes[0], nil)
	if !strings.Contains(critical(t, want), "disable-helm-controller=true") {
		t.Fatalf("the passthrough's critical keys are not rendered: %s", critical(t, want))
	}
	for _, n := range s.Nodes[1:] {
		c := NodeConfig(s, n, &s.Nodes[0])
		if critical(t, c) != critical(t, want) {
			t.Errorf("%s: %s differs from %s", n.Name, critical(t, c), critical(t, want))
		}
		if c.ClusterInit {
			t.Errorf("%s: a joining server must not cluster-init", n.Name)
		}
		var back map[string]any
		if err := yaml.Unmarshal(c.Render(), &back); err != nil {
			t.Fatal(err)
		}
		if _, ok := back["token"]; ok || back["token-file"] != TokenPath {
			t.Errorf("%s: config carries a token value or lacks token-file: %v", n.Name, back)
		}
	}
}

func node(name, ip string) profiles.Node {
	return profiles.Node{Name: name, Address: ip, Role: profiles.RoleServer}
}

func TestDecideInitialisesOnlyWhenNoServerHasData(t *testing.T) {
	a, b, c := node("a", "10.0.0.1"), node("b", "10.0.0.2"), node("c", "10.0.0.3")
	names := func(ns []profiles.Node) string {
		var out []string
		for _, n := range ns {
			out = append(out, n.Name)
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		name     string
		states   []ServerState
		init     string // "" when no cluster-init
		via      string
		join     string
		wantErr  error
		errParts []string
	}{
		{name: "fresh servers", states: []ServerState{{Node: a}, {Node: b}, {Node: c}}, init: "a", via: "a", join: "b,c"},
		{name: "first server lost, cluster lives on b and c",
			states: []ServerState{{Node: a}, {Node: b, HasData: true, Active: true, CAHash: "ca1"}, {Node: c, HasData: true, Active: true, CAHash: "ca1"}},
			via:    "b", join: "a"},
		{name: "interrupted after init", states: []ServerState{{Node: a, HasData: true, Active: true, CAHash: "ca1"}, {Node: b}, {Node: c}}, via: "a", join: "b,c"},
		{name: "complete cluster", states: []ServerState{{Node: a, HasData: true, Active: true, CAHash: "x"}, {Node: b, HasData: true, Active: true, CAHash: "x"}, {Node: c, HasData: true, Active: true, CAHash: "x"}}, via: "a"},
		{name: "two clusters", states: []ServerState{{Node: a, HasData: true, Active: true, CAHash: "ca1aaaaaaaaaaaaaa"}, {Node: b, HasData: true, Active: true, CAHash: "ca2bbbbbbbbbbbbbb"}, {Node: c}},
			wantErr: ErrSplitCluster, errParts: []string{"a (CA ca1aaaaaaaaa)", "b (CA ca2bbbbbbbbb)", "k3s-uninstall.sh"}},
		{name: "whole cluster down", states: []ServerState{{Node: a, HasData: true}, {Node: b, HasData: true}, {Node: c}},
			wantErr: ErrClusterDown, errParts: []string{"a, b", "will not initialise"}},
		{name: "stale member", states: []ServerState{{Node: a, HasData: true, Active: true, CAHash: "x"}, {Node: b, HasData: true}, {Node: c}},
			wantErr: ErrStaleServer, errParts: []string{"b;"}},
		{name: "unreachable server", states: []ServerState{{Node: a}, {Node: b, Err: errors.New("connection refused")}, {Node: c}},
			wantErr: ErrUnreachable, errParts: []string{"b (connection refused)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Decide(tc.states)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				for _, p := range tc.errParts {
					if !strings.Contains(err.Error(), p) {
						t.Errorf("message lacks %q: %v", p, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			init := ""
			if d.Init != nil {
				init = d.Init.Name
			}
			if init != tc.init || d.Via.Name != tc.via || names(d.Join) != tc.join {
				t.Fatalf("init %q via %q join %q; want %q %q %q", init, d.Via.Name, names(d.Join), tc.init, tc.via, tc.join)
			}
		})
	}
}

func TestClusterTokenIsGeneratedOnceAndKeptPrivate(t *testing.T) {
	dir := t.TempDir()
	tok, created, err := ClusterToken(dir, "production", nil, os.LookupEnv)
	if err != nil || !created || len(tok.Reveal()) != 64 {
		t.Fatalf("first: %v created=%v len=%d", err, created, len(tok.Reveal()))
	}
	again, created, err := ClusterToken(dir, "production", nil, os.LookupEnv)
	if err != nil || created || again.Reveal() != tok.Reveal() {
		t.Fatalf("second: %v created=%v same=%v", err, created, again.Reveal() == tok.Reveal())
	}
	p := filepath.Join(dir, "production", "cluster-token")
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode().Perm())
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ClusterToken(dir, "production", nil, os.LookupEnv); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable token accepted: %v", err)
	}
	t.Setenv("LABCTL_TEST_K3S_TOKEN", "given-token")
	given, _, err := ClusterToken(dir, "other", &profiles.SecretRef{Env: "LABCTL_TEST_K3S_TOKEN"}, os.LookupEnv)
	if err != nil || given.Reveal() != "given-token" {
		t.Fatalf("tokenRef: %v", err)
	}
	if fmt.Sprint(given) != "[redacted]" {
		t.Fatal("token printable")
	}
}

// The readiness check is one command (etcd's member list and the Node
// object); its answers are read strictly: the node's own member (by the
// name in its data, at its address) must be started and promoted and its
// Node Ready; a learner, a missing member, another node's member, a
// NotReady or unknown Node, or an error page are all "not yet", with the
// reason.
func TestMemberCheckNeedsTheNodesOwnPromotedMemberAndAReadyNode(t *testing.T) {
	n := profiles.Node{Name: "kube-srv-2", Address: "10.0.40.102"}
	golden.Assert(t, "testdata/member-check.sh", []byte(MemberCheckScript(n.Name)))
	members := func(name string, learner bool) string {
		return fmt.Sprintf(`--- members
{"header":{"cluster_id":"14841639068965178418"},"members":[{"ID":"10276657743932975437","name":"kube-srv-1-0a1b2c3d","peerURLs":["https://10.0.40.101:2380"],"clientURLs":["https://10.0.40.101:2379"]},{"ID":"9372538179322589801","name":%q,"peerURLs":["https://10.0.40.102:2380"],"clientURLs":["https://10.0.40.102:2379"],"isLearner":%v}]}
`, name, learner)
	}
	node := func(status, reason string) string {
		return fmt.Sprintf(`--- node
{"kind":"Node","metadata":{"name":"kube-srv-2"},"status":{"conditions":[{"type":"MemoryPressure","status":"False"},{"type":"Ready","status":%q,"reason":%q,"message":"m"}]}}`, status, reason)
	}
	cases := []struct {
		name, out, member string
		err               error
		msg               string
	}{
		{"ready", members("kube-srv-2-11223344", false) + node("True", "KubeletReady"), "kube-srv-2-11223344", nil, ""},
		{"learner", members("kube-srv-2-11223344", true) + node("True", "KubeletReady"), "kube-srv-2-11223344", ErrNotMember, "still a learner"},
		{"a dead member of the same name prefix is another member", members("kube-srv-2-1a2b3c4d", false) + node("True", "KubeletReady"), "kube-srv-2-9f8e7d6c", ErrNotMember, `the member at 10.0.40.102 is "kube-srv-2-1a2b3c4d", this node's data is member "kube-srv-2-9f8e7d6c"`},
		{"no data yet", members("kube-srv-2-1a2b3c4d", false) + node("True", "KubeletReady"), "", ErrNotMember, "this node's data is member \"\""},
		{"not ready", members("kube-srv-2-11223344", false) + node("False", "KubeletNotReady"), "kube-srv-2-11223344", ErrNodeNotReady, "KubeletNotReady: m"},
		{"not registered", members("kube-srv-2-11223344", false) + "--- node\n" + `{"kind":"Status","message":"nodes \"kube-srv-2\" not found"}`, "kube-srv-2-11223344", ErrNodeNotReady, `nodes "kube-srv-2" not found`},
		{"api down", members("kube-srv-2-11223344", false) + "--- node\ncurl: (7) Failed to connect to 127.0.0.1 port 6443", "kube-srv-2-11223344", ErrNodeNotReady, "did not answer: curl: (7)"},
		{"etcd down", "--- members\ncurl: (7) Failed to connect to 127.0.0.1 port 2379\n" + node("True", "KubeletReady"), "kube-srv-2-11223344", ErrNotMember, "etcd did not answer"},
	}
	for _, c := range cases {
		err := CheckMember(c.out, n, c.member)
		if (c.err != nil && !errors.Is(err, c.err)) || (c.err == nil && err != nil) || !strings.Contains(fmt.Sprint(err), c.msg) {
			t.Errorf("%s: err=%v, want %v containing %q", c.name, err, c.err, c.msg)
		}
	}
}

// Members are told apart by where they run (peer URL) and their full
// name, never by a name prefix; quorum counts healthy voters against the
// whole membership.
func TestEtcdMembersByPeerURLAndQuorumFromHealth(t *testing.T) {
	addrs := []string{"10.0.40.101", "10.0.40.102", "10.0.40.103"}
	golden.Assert(t, "testdata/etcd-observe.sh", []byte(EtcdScript(addrs)))
	list := `{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437"},"members":[` +
		`{"ID":"10276657743932975437","name":"kube-srv-1-0a1b2c3d","peerURLs":["https://10.0.40.101:2380"],"clientURLs":["https://10.0.40.101:2379"]},` +
		`{"ID":"9372538179322589801","name":"kube-srv-2-1a2b3c4d","peerURLs":["https://10.0.40.102:2380"],"clientURLs":["https://10.0.40.102:2379"]},` +
		`{"ID":"7","name":"kube-srv-3-55667788","peerURLs":["https://10.0.40.103:2380"],"clientURLs":["https://10.0.40.103:2379"]}]}`
	status := func(member, leader string) string {
		return fmt.Sprintf(`{"header":{"cluster_id":"14841639068965178418","member_id":%q},"leader":%q,"dbSize":"2174976"}`, member, leader)
	}
	out := "--- members\n" + list + "\n" +
		"--- status 10.0.40.101\n" + status("10276657743932975437", "10276657743932975437") + "\n" +
		"--- status 10.0.40.102\ncurl: (28) Connection timed out after 5001 milliseconds\n" +
		"--- status 10.0.40.103\n" + status("7", "10276657743932975437") + "\n"
	e, err := ParseEtcd(out, "kube-srv-1")
	if err != nil {
		t.Fatal(err)
	}
	if e.ClusterID != "cdf818194e3a8c32" || e.Leader != "8e9e05c52164694d" || len(e.Members) != 3 {
		t.Fatalf("etcd = %+v", e)
	}
	dead, ok := e.At("10.0.40.102")
	if !ok || dead.Name != "kube-srv-2-1a2b3c4d" || dead.Healthy || !strings.Contains(dead.Err, "timed out") {
		t.Errorf("member at .102: %+v", dead)
	}
	if _, ok := e.Named("kube-srv-2-9f8e7d6c"); ok {
		t.Error("a rebuilt node's new member name matched the dead member")
	}
	if !e.HasQuorum() || e.HealthyVoters() != 2 {
		t.Errorf("2 of 3 healthy: quorum %v, healthy %d", e.HasQuorum(), e.HealthyVoters())
	}
	script, err := MemberRemoveScript(dead)
	if err != nil || !strings.Contains(script, `-d '{"ID":"9372538179322589801"}'`) {
		t.Errorf("remove script %q %v", script, err)
	}
	// Two down: no quorum, and a survivor that knows no leader says so.
	out = "--- members\n" + list + "\n--- status 10.0.40.101\n" + status("10276657743932975437", "0") + "\n--- status 10.0.40.102\ncurl: (7) refused\n--- status 10.0.40.103\ncurl: (7) refused\n"
	e, err = ParseEtcd(out, "kube-srv-1")
	if err != nil {
		t.Fatal(err)
	}
	if e.HasQuorum() {
		t.Error("quorum with one of three answering and no leader")
	}
	if m, _ := e.At("10.0.40.101"); m.State() != "started, not answering (answers, but knows no leader)" {
		t.Errorf("survivor: %s", m.State())
	}
}

// A node's installed version and config.yaml are compared with the
// profile: a version or tls-san change is drift, the join keys are not.
func TestDriftNamesVersionAndConfigKeysButNotTheJoinTarget(t *testing.T) {
	s := production(t)
	n := s.Nodes[1]
	onDisk := NodeConfig(s, n, &s.Nodes[0]).Render()
	out := "binary=yes\nversion=k3s version v1.33.4+k3s1 (a1b2c3d4)\nunit=k3s\nactive=active\ndata=yes\nmember=kube-srv-2-1a2b3c4d\nca=abc\ntoken=" + TokenHash("t0k") + "\nconfig=" + base64.StdEncoding.EncodeToString(onDisk) + "\n"
	k, err := ParseObservation(out, TokenHash("t0k"))
	if err != nil {
		t.Fatal(err)
	}
	if !k.Installed || !k.Active || !k.HasData || !k.TokenMatches || k.Version != "v1.33.4+k3s1" || k.Member != "kube-srv-2-1a2b3c4d" || k.Reason() != "k3s v1.33.4+k3s1 active" {
		t.Fatalf("observed %+v (%s)", k, k.Reason())
	}
	if d := Drift(s, n, k); len(d) != 0 {
		t.Fatalf("a node as rendered (joined through kube-srv-1) drifts: %v", d)
	}
	s.K3s.Version = "v1.33.5+k3s1"
	s.DNS.Records = append(s.DNS.Records, profiles.DNSRecord{Name: "api.ronaldlokers.nl", Targets: []string{"10.0.40.101"}})
	got := facts.Changes(Drift(s, n, k))
	want := "k3s version v1.33.4+k3s1 → v1.33.5+k3s1, tls-san [10.0.40.101,10.0.40.102,10.0.40.103,linkding.ronaldlokers.nl,longhorn.ronaldlokers.nl,grafana.ronaldlokers.nl] → [10.0.40.101,10.0.40.102,10.0.40.103,linkding.ronaldlokers.nl,longhorn.ronaldlokers.nl,grafana.ronaldlokers.nl,api.ronaldlokers.nl]"
	if got != want {
		t.Errorf("drift\n got %s\nwant %s", got, want)
	}
	if _, err := ParseObservation("garbage", ""); err == nil {
		t.Error("unexpected output accepted")
	}
}

// A dangling symlink where the token lives is refused (it used to make
// the create recurse until the stack overflowed), and two runs racing
// keep one token.
func TestClusterTokenRefusesSymlinksAndOneTokenWinsARace(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "p"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "nowhere"), filepath.Join(dir, "p", "cluster-token")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ClusterToken(dir, "p", nil, os.LookupEnv); err == nil || !strings.Contains(err.Error(), "is a symbolic link") {
		t.Fatalf("dangling symlink: %v", err)
	}
	tokens := make(chan string, 8)
	for range 8 {
		go func() {
			tok, _, err := ClusterToken(dir, "q", nil, os.LookupEnv)
			if err != nil {
				t.Error(err)
			}
			tokens <- tok.Reveal()
		}()
	}
	first := <-tokens
	for range 7 {
		if got := <-tokens; got != first {
			t.Fatalf("two tokens: %q and %q", first, got)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "q"))
	if len(entries) != 1 {
		t.Errorf("state holds %d files (temporary files left?)", len(entries))
	}
}

// The scripts that remove a server's data are pinned: they undo the etcd
// disk's bind mount (a mount point cannot be moved or removed) and wipe
// or keep aside the data on that disk.
func TestGoldenDataRemovalScripts(t *testing.T) {
	golden.Assert(t, "testdata/uninstall.sh", []byte(UninstallScript+"\n"))
	golden.Assert(t, "testdata/move-db-before-restore.sh", []byte(MoveServerDBScript+"\n"))
}

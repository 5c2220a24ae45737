package k3s

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

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

func TestCriticalSettingsAreEqualOnAllServersAndNoSecretIsRendered(t *testing.T) {
	s := production(t)
	s.K3s.Disable = []string{"metrics-server"}
	want := NodeConfig(s, s.Nodes[0], nil)
	for _, n := range s.Nodes[1:] {
		c := NodeConfig(s, n, &s.Nodes[0])
		if c.Critical() != want.Critical() || strings.Join(c.TLSSAN, ",") != strings.Join(want.TLSSAN, ",") {
			t.Errorf("%s: %s / %v differ from %s / %v", n.Name, c.Critical(), c.TLSSAN, want.Critical(), want.TLSSAN)
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
// object); its answers are read strictly: a learner, a missing member, a
// NotReady or unknown Node, or an error page are all "not yet", with the
// reason.
func TestMemberCheckNeedsAPromotedMemberAndAReadyNode(t *testing.T) {
	n := profiles.Node{Name: "kube-srv-2", Address: "10.0.40.102"}
	golden.Assert(t, "testdata/member-check.sh", []byte(memberScript(n.Name)))
	members := func(name string, learner bool) string {
		return fmt.Sprintf(`{"members":[{"name":"kube-srv-1-0a1b2c3d","clientURLs":["https://10.0.40.101:2379"]},{"name":%q,"clientURLs":["https://10.0.40.102:2379"],"isLearner":%v}]}`, name, learner)
	}
	node := func(status, reason string) string {
		return fmt.Sprintf(`{"kind":"Node","status":{"conditions":[{"type":"MemoryPressure","status":"False"},{"type":"Ready","status":%q,"reason":%q,"message":"m"}]}}`, status, reason)
	}
	cases := []struct {
		name, members, node string
		ok                  bool
		err                 error
		msg                 string
	}{
		{"ready", members("kube-srv-2-11223344", false), node("True", "KubeletReady"), true, nil, ""},
		{"learner", members("kube-srv-2-11223344", true), node("True", "KubeletReady"), false, ErrNotMember, ""},
		{"other name", members("kube-srv-20-11223344", false), node("True", "KubeletReady"), false, ErrNotMember, ""},
		{"not ready", members("kube-srv-2-11223344", false), node("False", "KubeletNotReady"), false, ErrNodeNotReady, "KubeletNotReady: m"},
		{"not registered", members("kube-srv-2-11223344", false), `{"kind":"Status","message":"nodes \"kube-srv-2\" not found"}`, false, ErrNodeNotReady, `nodes "kube-srv-2" not found`},
		{"api down", members("kube-srv-2-11223344", false), "curl: (7) Failed to connect to 127.0.0.1 port 6443", false, ErrNodeNotReady, "did not answer: curl: (7)"},
	}
	for _, c := range cases {
		ok, err := isMember(c.members, n)
		if ok {
			ok, err = nodeReady(c.node, n)
		}
		if ok != c.ok || (c.err != nil && !errors.Is(err, c.err)) || (c.err == nil && err != nil) || !strings.Contains(fmt.Sprint(err), c.msg) {
			t.Errorf("%s: ok=%v err=%v, want ok=%v err=%v containing %q", c.name, ok, err, c.ok, c.err, c.msg)
		}
	}
}

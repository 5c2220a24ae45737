package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/internal/golden"
)

func fixedNow() time.Time { return time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC) }

// labctl runs the CLI in-process with an empty user profiles directory.
func labctl(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	full := append([]string{"labctl", "--profiles-dir", t.TempDir()}, args...)
	code = run(context.Background(), full, &out, &errb, fixedNow)
	return out.String(), errb.String(), code
}

func TestGoldenCommandOutputs(t *testing.T) {
	for _, tc := range []struct {
		golden string
		args   []string
	}{
		{"plan-production.txt", []string{"plan", "production"}},
		{"plan-production.jsonl", []string{"plan", "production", "-o", "json"}},
		{"plan-staging.txt", []string{"plan", "staging"}},
		{"plan-production-rebuild-kube-srv-1.txt", []string{"plan", "production", "--rebuild", "kube-srv-1", "--state-dir", "/labctl-state"}},
		{"plan-production-rebuild-kube-srv-2.txt", []string{"plan", "production", "--rebuild", "kube-srv-2", "--state-dir", "/labctl-state"}},
		{"plan-production-rebuild-kube-srv-2.jsonl", []string{"plan", "production", "--rebuild", "kube-srv-2", "--state-dir", "/labctl-state", "-o", "json"}},
		{"plan-staging-rebuild-agent-1.txt", []string{"plan", "staging", "--rebuild", "agent-1", "--state-dir", "/labctl-state"}},
		{"plan-given-hosts-rebuild-kube-srv-3.txt", []string{"plan", "-f", "testdata/given-hosts.yaml", "--rebuild", "kube-srv-3", "--state-dir", "/labctl-state"}},
		{"plan-staging.jsonl", []string{"plan", "-o", "json", "staging"}},
		{"plan-homelab.txt", []string{"plan", "-f", "testdata/homelab.yaml"}},
		{"profiles-list.txt", []string{"profiles", "list"}},
		{"profiles-show-staging.yaml", []string{"profiles", "show", "staging"}},
		{"profiles-validate-invalid.txt", []string{"profiles", "validate", "-f", "testdata/even-servers.yaml", "-f", "testdata/inline-secret.yaml", "production"}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			out, errOut, code := labctl(t, tc.args...)
			if strings.HasPrefix(tc.golden, "profiles-validate-invalid") {
				if code != 1 || !strings.Contains(errOut, "invalid profiles: 2 of 3") {
					t.Fatalf("exit %d, stderr %q; want 1 and a count", code, errOut)
				}
			} else if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			golden.Assert(t, "testdata/"+tc.golden, []byte(out))
		})
	}
}

// The production plan must show the documented order and concurrency.
func TestPlanProductionOrdersJoinsOneAtATime(t *testing.T) {
	out, _, code := labctl(t, "plan", "production", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	stage := map[string]int{}
	var changes int
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev struct {
			Kind     string
			Schedule []struct {
				ID    string
				Stage int
			}
			Changes int
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("not JSON: %q: %v", line, err)
		}
		for _, s := range ev.Schedule {
			stage[s.ID] = s.Stage
		}
		if ev.Kind == "done" {
			changes = ev.Changes
		}
	}
	same := func(a, b, c string) bool { return stage[a] == stage[b] && stage[b] == stage[c] }
	if !same("vm-clone/kube-srv-1", "vm-clone/kube-srv-2", "vm-clone/kube-srv-3") ||
		!same("prerequisites/kube-srv-1", "prerequisites/kube-srv-2", "prerequisites/kube-srv-3") {
		t.Errorf("VMs and prerequisites are not parallel across hosts: %v", stage)
	}
	order := []string{"prerequisites/kube-srv-1", "k3s-init/kube-srv-1", "k3s-join/kube-srv-2", "k3s-join/kube-srv-3", "kubeconfig", "flux"}
	for i := 1; i < len(order); i++ {
		if stage[order[i]] <= stage[order[i-1]] {
			t.Errorf("%s (stage %d) does not come after %s (stage %d)", order[i], stage[order[i]], order[i-1], stage[order[i-1]])
		}
	}
	if changes == 0 {
		t.Error("the plan reports no changes")
	}
}

func TestExitCodes(t *testing.T) {
	t.Setenv("PROXMOX_VE_ENDPOINT", "") // never a real Proxmox from a test
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no profile", []string{"plan"}, 2, "which profile?"},
		{"two profiles", []string{"plan", "staging", "production"}, 2, "takes one profile"},
		{"unknown profile", []string{"plan", "prod"}, 1, `profile not found: "prod"`},
		{"missing file", []string{"plan", "-f", "testdata/nope.yaml"}, 1, "no such file"},
		{"bad completion shell", []string{"completion", "tcsh"}, 2, "want bash, zsh or fish"},
		{"invalid profile file", []string{"plan", "-f", "testdata/inline-secret.yaml"}, 1, "inline secret values are not allowed"},
		{"create without a Proxmox endpoint", []string{"create", "production", "--no-flux"}, 1, "no Proxmox API endpoint: set proxmox.endpoint in the profile or export PROXMOX_VE_ENDPOINT"},
		{"plan --observe without a token", []string{"plan", "-f", "testdata/pve-no-token.yaml", "--observe"}, 1, "proxmox.tokenRef: environment variable LABCTL_TEST_NO_SUCH_TOKEN: secret not found"},
		{"plan --observe of a k3d profile without its Docker", []string{"plan", "-f", "testdata/k3d-unreachable.yaml", "--observe"}, 1, "Docker is not reachable at tcp://127.0.0.1:9: check that the host is up"},
		{"create on a k3d profile without its Docker says so once", []string{"create", "-f", "testdata/k3d-unreachable.yaml", "--no-flux"}, 1, "labctl: k3d-cluster: k3d cluster staging: Docker is not reachable at tcp://127.0.0.1:9: check that the host is up, that Docker runs there and that this user may use it\n"},
		{"preflight of a k3d profile on this machine's Docker", []string{"preflight", "local"}, 1, "labctl preflight checks SSH nodes, or a k3d cluster's Docker host reached over SSH with spec.hosts tuning; profile local has neither"},
		{"rebuild of a node the profile lacks", []string{"rebuild", "production", "kube-srv-9"}, 1, `profile production has no node "kube-srv-9" (its nodes: [kube-srv-1 kube-srv-2 kube-srv-3])`},
		{"rebuild without a node", []string{"rebuild", "production"}, 2, "rebuild takes a profile and a node"},
		{"rebuild of a k3d server", []string{"plan", "staging", "--rebuild", "server-0"}, 1, "k3d-staging-server-0 is a server of k3d cluster staging, which runs 1: a k3d server cannot be rebuilt in place"},
		{"destroy of a k3d profile without its Docker", []string{"destroy", "-f", "testdata/k3d-unreachable.yaml"}, 1, "labctl: k3d-delete: k3d cluster staging: Docker is not reachable at tcp://127.0.0.1:9"},
		{"destroy given hosts it cannot reach", []string{"destroy", "-f", "testdata/given-hosts.yaml", "--yes"}, 1, "k3s-uninstall/kube-srv-1: kube-srv-1: identity file: open testdata/no-such-key: no such file or directory"},
		{"plan --observe of given hosts it cannot reach", []string{"plan", "-f", "testdata/given-hosts.yaml", "--observe"}, 1, "prerequisites/kube-srv-2: kube-srv-2: identity file: open testdata/no-such-key"},
		{"destroy Proxmox without an endpoint", []string{"destroy", "production", "--yes"}, 1, "no Proxmox API endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := labctl(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.stderr) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, errOut, tc.code, tc.stderr)
			}
		})
	}
}

func TestVersionAndCompletion(t *testing.T) {
	out, _, code := labctl(t, "version")
	if code != 0 || !strings.HasPrefix(out, "labctl ") {
		t.Fatalf("version: %d %q", code, out)
	}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		out, errOut, code := labctl(t, "completion", shell)
		if code != 0 || !strings.Contains(out, "labctl") {
			t.Fatalf("completion %s: exit %d %q %q", shell, code, out, errOut)
		}
	}
	// The scripts ask labctl for candidates; those must list the commands.
	// urfave/cli reads os.Args for this, so set it as the shell would.
	saved := os.Args
	os.Args = []string{"labctl", "--generate-bash-completion"}
	defer func() { os.Args = saved }()
	out, _, _ = labctl(t, "--generate-bash-completion")
	for _, cmd := range []string{"profiles", "plan", "version", "completion"} {
		if !strings.Contains(out, cmd) {
			t.Errorf("completion candidates %q lack %s", out, cmd)
		}
	}
}

// verify reports every check even when no host answers: each SSH login
// fails on its own line, the API and etcd checks say why, exit 1.
func TestVerifyOfHostsItCannotReachReportsEachAndFails(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	out, errOut, code := labctl(t, "verify", "-f", "testdata/given-hosts.yaml")
	if code != 1 || !strings.Contains(errOut, "verify: checks failed") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{"FAIL  ssh  kube-srv-1", "FAIL  ssh  kube-srv-3", "no-such-key", "no server's K3s runs", "checks:", "checked in"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, errOut, code := labctl(t, "verify", "-f", "testdata/given-hosts.yaml", "-o", "yaml"); code != 2 {
		t.Errorf("-o yaml: exit %d %s", code, errOut)
	}
}

//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/plan"
)

// TestCreateKilledAtEachStageConverges runs the real labctl binary and
// SIGKILLs it right after the prerequisites, after the first server and
// after the first join; each re-run continues where the last left off, the
// last one finishes, and one more run changes nothing.
func TestCreateKilledAtEachStageConverges(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	labctl := filepath.Join(t.TempDir(), "labctl")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", labctl, "../cmd/labctl").CombinedOutput(); err != nil {
		t.Fatalf("build labctl: %v %s", err, out)
	}
	file := k3sNodes(t, ctx, []string{"172.30.20.61", "172.30.20.62", "172.30.20.63"})("root", "")
	state, kc := t.TempDir(), filepath.Join(t.TempDir(), "kubeconfig")

	// create runs labctl; killAfter names the step whose completion ends
	// it with SIGKILL ("" runs to the end). It returns the done event.
	create := func(killAfter string) (killed bool, done plan.Event) {
		cmd := exec.CommandContext(ctx, labctl, "create", "-f", file, "--no-flux", "-o", "json", "--state-dir", state, "--kubeconfig", kc)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var e plan.Event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatalf("not an event: %q", sc.Text())
			}
			if e.Kind == plan.KindStepDone && e.Step == killAfter {
				_ = cmd.Process.Kill()
				killed = true
				break
			}
			if e.Kind == plan.KindDone {
				done = e
			}
		}
		err = cmd.Wait()
		if !killed && err != nil {
			t.Fatalf("labctl create: %v (done event: %+v)", err, done)
		}
		return killed, done
	}
	for _, stage := range []string{"k3s-inspect", "k3s-init/node-1", "k3s-join/node-2"} {
		if killed, _ := create(stage); !killed {
			t.Fatalf("labctl finished before %s", stage)
		}
		t.Logf("killed labctl (SIGKILL) after %s", stage)
	}
	_, done := create("")
	if done.Error != "" {
		t.Fatalf("final run: %s", done.Error)
	}
	start := time.Now()
	_, again := create("")
	if again.Changes != 0 {
		t.Fatalf("run after convergence made %d changes", again.Changes)
	}
	t.Logf("converged after three kills; the next run made 0 changes in %s", time.Since(start).Round(time.Millisecond))
	out, err := bed.Exec(ctx, "node-3", "sh", "-c", "curl -sS --cacert /var/lib/rancher/k3s/server/tls/etcd/server-ca.crt --cert /var/lib/rancher/k3s/server/tls/etcd/client.crt --key /var/lib/rancher/k3s/server/tls/etcd/client.key -X POST https://127.0.0.1:2379/v3/cluster/member/list -d '{}'")
	if err != nil || strings.Count(out, `"name":"node-`) != 3 || strings.Contains(out, "isLearner") {
		t.Fatalf("etcd members after convergence: %v %s", err, out)
	}
	tok, _ := os.ReadDir(filepath.Join(state, "production-e2e"))
	if len(tok) != 1 {
		t.Errorf("state holds %d files, want the one token kept across runs", len(tok))
	}
}

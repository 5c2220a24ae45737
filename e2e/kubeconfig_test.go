//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/labctl/labctl/commands"
	"github.com/labctl/labctl/e2e/testbed"
)

// No K3s runs on the bed yet (the stand-in is still to come), so the test
// places a K3s-shaped /etc/rancher/k3s/k3s.yaml (root, 0600) on the second
// node. What is exercised for real: SSH as a sudo user, sudo reading a
// root-only file, falling through a server without K3s, the rename to the
// profile's context with that server's address, and the merge.
func kubeconfigFetchedOverSSHAndMerged(t *testing.T) {
	ctx := context.Background()
	ips := []string{"172.30.20.41", "172.30.20.42", "172.30.20.43"}
	for i, ip := range ips[:2] {
		n, err := bed.StartNode(ctx, []string{"kc-1", "kc-2"}[i], ip)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = bed.RemoveNode(ctx, n.Name) }()
	}
	sample, err := os.ReadFile("../provision/kubeconfig/testdata/k3s.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bed.Docker.Input(ctx, bytes.NewReader(sample), "exec", "-i", "labctl-e2e-kc-2", "sh", "-c",
		"mkdir -p /etc/rancher/k3s && umask 077 && cat > /etc/rancher/k3s/k3s.yaml"); err != nil {
		t.Fatal(err)
	}
	file := e2eProfileAs(t, ips, testbed.SudoUser)
	kc := filepath.Join(t.TempDir(), "config")
	var out bytes.Buffer
	err = commands.Kubeconfig(ctx, commands.Env{Stdout: &out, Stderr: os.Stderr}, commands.ProfileArg{File: file}, commands.KubeconfigOptions{Path: kc})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `merged context "production-e2e" (server https://172.30.20.42:6443, from node-2)`) {
		t.Errorf("output %q", out.String())
	}
	got, err := clientcmd.LoadFromFile(kc)
	if err != nil {
		t.Fatal(err)
	}
	if got.Clusters["production-e2e"].Server != "https://172.30.20.42:6443" || string(got.AuthInfos["production-e2e"].ClientKeyData) != "KEY DATA" {
		t.Fatalf("merged: %+v", got)
	}
	if strings.Contains(out.String(), "S0VZIERBVEE") {
		t.Error("the client key reached the output")
	}
	out.Reset()
	if err := commands.Kubeconfig(ctx, commands.Env{Stdout: &out, Stderr: os.Stderr}, commands.ProfileArg{File: file}, commands.KubeconfigOptions{Path: kc}); err != nil || !strings.Contains(out.String(), "already up to date") {
		t.Fatalf("second run: %v %q", err, out.String())
	}
}

package testbed

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// KubeVersion is the upstream Kubernetes the bed builds (e2e/tools/kube).
const KubeVersion = "v1.34.4"

// KubeBinaries are the upstream commands copied onto server nodes.
var KubeBinaries = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl"}

// BuildKube returns a directory holding the Kubernetes binaries and the
// K3s stand-in. The Kubernetes binaries are cached by the hash of the
// tools module's go.mod and go.sum; the stand-in is rebuilt every time
// (seconds, from Go's build cache).
func BuildKube(ctx context.Context, cache string, log func(string, ...any)) (string, error) {
	src, err := sourceDir("../tools/kube")
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			return "", err
		}
		h.Write(b)
	}
	dir := filepath.Join(cache, "kube-"+KubeVersion+"-"+hex.EncodeToString(h.Sum(nil))[:12])
	ldflags := fmt.Sprintf("-s -w -X k8s.io/component-base/version.gitVersion=%[1]s -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34 -X k8s.io/client-go/pkg/version.gitVersion=%[1]s", KubeVersion)
	missing := false
	for _, b := range KubeBinaries {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			missing = true
		}
	}
	if missing {
		start := time.Now()
		log("kube: building %s (cold: several minutes)", KubeVersion)
		args := []string{"build", "-trimpath", "-ldflags", ldflags, "-o", dir + "/"}
		for _, b := range KubeBinaries {
			args = append(args, "k8s.io/kubernetes/cmd/"+b)
		}
		if err := goBuild(ctx, src, args...); err != nil {
			return "", err
		}
		log("kube: built in %s", time.Since(start).Round(time.Second))
	}
	start := time.Now()
	if err := goBuild(ctx, src, "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(dir, "k3s"), "./cmd/k3s"); err != nil {
		return "", err
	}
	log("kube: K3s stand-in built in %s", time.Since(start).Round(time.Millisecond))
	return dir, nil
}

func goBuild(ctx context.Context, dir string, args ...string) error {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %v: %w: %s", args[:2], err, lastLines(string(b), 20))
	}
	return nil
}

// InstallBundle puts the Kubernetes binaries where K3s unpacks the ones it
// bundles (<data-dir>/data/current/bin), so that the stand-in, installed
// the way labctl installs K3s, finds them as the real binary would.
func (b *Bed) InstallBundle(ctx context.Context, node, dir string) error {
	if _, err := b.Exec(ctx, node, "mkdir", "-p", "/var/lib/rancher/k3s/data/current/bin"); err != nil {
		return err
	}
	for _, f := range KubeBinaries {
		if _, err := b.Docker.Output(ctx, "cp", filepath.Join(dir, f), b.opts.Name+"-"+node+":/var/lib/rancher/k3s/data/current/bin/"+f); err != nil {
			return err
		}
	}
	return nil
}

// InstallScript is the stand-in's install.sh, with K3s's interface.
func InstallScript() (string, error) { return sourceDir("../tools/kube/install/install.sh") }

// InstallKube copies the binaries into a node's /usr/local/bin.
func (b *Bed) InstallKube(ctx context.Context, node, dir string) error {
	for _, f := range append([]string{"k3s"}, KubeBinaries...) {
		if _, err := b.Docker.Output(ctx, "cp", filepath.Join(dir, f), b.opts.Name+"-"+node+":/usr/local/bin/"+f); err != nil {
			return err
		}
	}
	return nil
}

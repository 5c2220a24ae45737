package testbed

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"
)

// KubeVersion is the upstream Kubernetes the bed builds (e2e/tools/kube).
const KubeVersion = "v1.34.4"

// KubeBinaries are the upstream commands copied onto server nodes.
var KubeBinaries = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"}

// BuildKube returns a directory holding the Kubernetes binaries and the
// K3s stand-in. The Kubernetes binaries are cached by the hash of the
// tools module's go.mod and go.sum; the stand-in is rebuilt every time
// (seconds, from Go's build cache) once per test process. Scenarios that
// run in parallel call it at the same moment: the first builds, the others
// wait for it and get the same directory (two builds writing the same
// files raced: a half-written runc, a lost rename).
func BuildKube(ctx context.Context, cache string, log func(string, ...any)) (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	if dir, ok := builtKube[cache]; ok {
		return dir, nil
	}
	dir, err := buildKube(ctx, cache, log)
	if err == nil {
		builtKube[cache] = dir
	}
	return dir, err
}

// buildMu serialises the bed's builds into its cache (BuildKube,
// BuildFlux, the pause image's tar); builtKube remembers BuildKube's
// result per cache directory for the rest of the process.
var (
	buildMu   sync.Mutex
	builtKube = map[string]string{}
)

func buildKube(ctx context.Context, cache string, log func(string, ...any)) (string, error) {
	src, err := sourceDir("../tools/kube")
	if err != nil {
		return "", err
	}
	sum, err := moduleHash(src)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "kube-"+KubeVersion+"-"+sum)
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
		args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", dir + "/"}
		for _, b := range KubeBinaries {
			args = append(args, "k8s.io/kubernetes/cmd/"+b)
		}
		if err := goBuild(ctx, src, args...); err != nil {
			return "", err
		}
		log("kube: built in %s", time.Since(start).Round(time.Second))
	}
	start := time.Now()
	if err := goBuild(ctx, src, "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w", "-o", filepath.Join(dir, "k3s"), "./cmd/k3s"); err != nil {
		return "", err
	}
	for _, c := range []string{"pause", "k3d-proxy", "k3d-tools"} {
		if err := goBuild(ctx, src, "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w", "-o", filepath.Join(dir, c), "./cmd/"+c); err != nil {
			return "", err
		}
	}
	// Where the bed's Docker needs the runtime wrapper, containerd inside
	// the nodes needs it too: it goes where K3s keeps its bundled runc.
	if lacksSysResource() {
		wrap, err := buildRuncWrap(ctx, cache)
		if err != nil {
			return "", err
		}
		if err := copyFile(wrap, filepath.Join(dir, "runc")); err != nil {
			return "", err
		}
	} else {
		_ = os.Remove(filepath.Join(dir, "runc"))
	}
	log("kube: K3s stand-in built in %s", time.Since(start).Round(time.Millisecond))
	return dir, nil
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(to), "."+filepath.Base(to)+".*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(f.Name()) }() // gone after the rename
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o755); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), to)
}

// PauseImage is the sandbox image's name as the stand-in's containerd
// config gives it.
const PauseImage = "rancher/mirrored-pause:3.6"

// pauseImageTar packs dir/pause as PauseImage (docker import, docker
// save) into dir/images/pause.tar, the form K3s's air-gap images take.
func (b *Bed) pauseImageTar(ctx context.Context, dir string) (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	out := filepath.Join(dir, "images", "pause.tar")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	bin, err := os.ReadFile(filepath.Join(dir, "pause"))
	if err != nil {
		return "", err
	}
	// Kept while the binary is the same: docker save of a fresh import
	// differs byte for byte, and images built from it are cached by hash.
	sum := sha256.Sum256(bin)
	stamp := out + ".sum"
	if old, err := os.ReadFile(stamp); err == nil && string(old) == hex.EncodeToString(sum[:]) {
		if _, err := os.Stat(out); err == nil {
			return out, nil
		}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "pause", Mode: 0o755, Size: int64(len(bin)), ModTime: time.Unix(0, 0)}); err != nil {
		return "", err
	}
	if _, err := tw.Write(bin); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if _, err := b.Docker.Input(ctx, &buf, "import", "--change", `ENTRYPOINT ["/pause"]`, "-", PauseImage); err != nil {
		return "", err
	}
	if _, err := b.Docker.Output(ctx, "save", "-o", out, PauseImage); err != nil {
		return "", err
	}
	return out, os.WriteFile(stamp, []byte(hex.EncodeToString(sum[:])), 0o644)
}

// BundleDir is where a node keeps what a real K3s binary carries inside
// itself (the stand-in is small): the bundled binaries (bin/) and the
// sandbox image (images/). The stand-in unpacks it into its data dir when
// it starts, as K3s does, so an uninstall (which removes the data dir)
// followed by an install finds them again.
const BundleDir = "/opt/k3s-standin-bundle"

// installNodeBundle gives a node what K3s brings besides its own binary:
// the runtime wrapper as the bundled runc (where needed) and the sandbox
// image for the air-gap images directory.
func (b *Bed) installNodeBundle(ctx context.Context, node, dir string) error {
	img, err := b.pauseImageTar(ctx, dir)
	if err != nil {
		return err
	}
	if _, err := b.Exec(ctx, node, "mkdir", "-p", BundleDir+"/bin", BundleDir+"/images"); err != nil {
		return err
	}
	c := b.opts.Name + "-" + node + ":"
	if _, err := b.Docker.Output(ctx, "cp", img, c+BundleDir+"/images/pause.tar"); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, "runc")); err == nil {
		if _, err := b.Docker.Output(ctx, "cp", filepath.Join(dir, "runc"), c+BundleDir+"/bin/runc"); err != nil {
			return err
		}
	}
	return nil
}

// moduleHash identifies a tools module's dependency set: the hash of its
// go.mod and go.sum (12 hex digits), which names the build cache.
func moduleHash(src string) (string, error) {
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			return "", err
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
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

// InstallBundle puts the Kubernetes binaries into the node's bundle
// (BundleDir/bin), which the stand-in unpacks where K3s unpacks the ones
// it bundles (<data-dir>/data/current/bin), so that the stand-in,
// installed the way labctl installs K3s, finds them as the real binary
// would.
func (b *Bed) InstallBundle(ctx context.Context, node, dir string) error {
	if err := b.installNodeBundle(ctx, node, dir); err != nil {
		return err
	}
	for _, f := range KubeBinaries {
		if _, err := b.Docker.Output(ctx, "cp", filepath.Join(dir, f), b.opts.Name+"-"+node+":"+BundleDir+"/bin/"+f); err != nil {
			return err
		}
	}
	return nil
}

// InstallScript is the stand-in's install.sh, with K3s's interface.
func InstallScript() (string, error) { return sourceDir("../tools/kube/install/install.sh") }

// InstallKube copies the binaries into a node's /usr/local/bin.
func (b *Bed) InstallKube(ctx context.Context, node, dir string) error {
	if err := b.installNodeBundle(ctx, node, dir); err != nil {
		return err
	}
	for _, f := range append([]string{"k3s"}, KubeBinaries...) {
		if _, err := b.Docker.Output(ctx, "cp", filepath.Join(dir, f), b.opts.Name+"-"+node+":/usr/local/bin/"+f); err != nil {
			return err
		}
	}
	return nil
}

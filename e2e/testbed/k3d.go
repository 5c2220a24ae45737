package testbed

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Images k3d v5.8.3 uses, built here from the stand-in since none can be
// pulled: the node image (rancher/k3s, whose /bin/k3s is the K3s
// stand-in), the load balancer and the tools image. k3d finds them by
// these names and does not pull. Library callers must set k3d's
// version.Version to K3dVersion, else k3d asks for the helpers' :latest.
const (
	K3dVersion    = "v5.8.3"
	K3sImage      = "docker.io/rancher/k3s:v1.34.4-k3s1"
	K3dProxyImage = "ghcr.io/k3d-io/k3d-proxy:5.8.3"
	K3dToolsImage = "ghcr.io/k3d-io/k3d-tools:5.8.3"
)

// K3dImages builds the three images from BuildKube's directory, the node
// image carrying extraImages (image tarballs) as air-gap images; each is
// rebuilt only when its inputs' hash (a label) changed.
func (b *Bed) K3dImages(ctx context.Context, dir string, log func(string, ...any), extraImages ...string) error {
	start := time.Now()
	pause, err := b.pauseImageTar(ctx, dir)
	if err != nil {
		return err
	}
	files := []tarFile{{"usr/bin/k3s", filepath.Join(dir, "k3s"), 0o755}}
	for _, f := range KubeBinaries {
		files = append(files, tarFile{"usr/local/bin/" + f, filepath.Join(dir, f), 0o755})
	}
	files = append(files, tarFile{"var/lib/rancher/k3s/agent/images/pause.tar", pause, 0o644})
	// The bed's CA, trusted as a public one (Go reads /etc/ssl/certs/*):
	// containerd pulls from the bed's registry in real-images mode.
	files = append(files, tarFile{"etc/ssl/certs/labctl-testbed-ca.pem", caFile(b.opts.Cache), 0o644})
	// More air-gap images (Flux's controllers) ride in the node image.
	for _, f := range extraImages {
		files = append(files, tarFile{"var/lib/rancher/k3s/agent/images/" + filepath.Base(f), f, 0o644})
	}
	if _, err := os.Stat(filepath.Join(dir, "runc")); err == nil {
		files = append(files, tarFile{"var/lib/rancher/k3s/data/current/bin/runc", filepath.Join(dir, "runc"), 0o755})
	}
	// k3d's entrypoint script traps signals by name, which Debian's dash
	// refuses; K3s's image has a busybox sh, the stand-in's bash.
	links := map[string]string{"usr/bin/sh": "bash"}
	built, err := b.commitImage(ctx, K3sImage, b.Image, files, links, []string{
		"ENV KUBECONFIG=/etc/rancher/k3s/k3s.yaml",
		`VOLUME ["/var/lib/kubelet", "/var/lib/rancher/k3s", "/var/lib/cni", "/var/log"]`,
		`ENTRYPOINT ["/bin/k3s"]`, `CMD ["agent"]`,
	})
	if err != nil {
		return fmt.Errorf("k3d node image: %w", err)
	}
	for _, h := range []struct{ tag, bin string }{{K3dProxyImage, "k3d-proxy"}, {K3dToolsImage, "k3d-tools"}} {
		if _, err := b.importImage(ctx, h.tag, []tarFile{{"app/" + h.bin, filepath.Join(dir, h.bin), 0o755}}, `ENTRYPOINT ["/app/`+h.bin+`"]`); err != nil {
			return fmt.Errorf("%s: %w", h.tag, err)
		}
	}
	log("k3d: images ready in %s (node image rebuilt: %v)", time.Since(start).Round(time.Millisecond), built)
	return nil
}

type tarFile struct {
	name, src string
	mode      int64
}

func hashInputs(parts []string, files []tarFile) (string, error) {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintln(h, p)
	}
	for _, f := range files {
		fmt.Fprintln(h, f.name, f.mode)
		r, err := os.Open(f.src)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(h, r)
		r.Close()
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func (b *Bed) imageHash(ctx context.Context, tag string) string {
	out, err := b.Docker.Output(ctx, "image", "inspect", "--format", `{{index .Config.Labels "labctl.hash"}}`, tag)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// writeTarDirs streams world-writable (sticky) directories, then files.
func writeTarDirs(w io.Writer, files []tarFile, dirs []string) error {
	tw := tar.NewWriter(w)
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o1777, ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
	}
	return writeFiles(tw, files, nil)
}

// writeTar streams files and symlinks as a tar archive.
func writeTar(w io.Writer, files []tarFile, links map[string]string) error {
	return writeFiles(tar.NewWriter(w), files, links)
}

func writeFiles(tw *tar.Writer, files []tarFile, links map[string]string) error {
	for _, f := range files {
		st, err := os.Stat(f.src)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: st.Size(), ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		r, err := os.Open(f.src)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, r)
		r.Close()
		if err != nil {
			return err
		}
	}
	for name, target := range links {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777, ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
	}
	return tw.Close()
}

// commitImage adds files to base (docker create, cp, commit).
func (b *Bed) commitImage(ctx context.Context, tag, base string, files []tarFile, links map[string]string, changes []string) (bool, error) {
	var linkList []string
	for k, v := range links {
		linkList = append(linkList, k+"->"+v)
	}
	hash, err := hashInputs(append(append([]string{base}, changes...), linkList...), files)
	if err != nil {
		return false, err
	}
	if b.cached(ctx, tag, hash) {
		return false, nil
	}
	name := fmt.Sprintf("%s-imagebuild-%d", b.opts.Name, time.Now().UnixNano())
	if _, err := b.Docker.Output(ctx, "create", "--name", name, base); err != nil {
		return false, err
	}
	defer func() { _, _ = b.Docker.Output(context.WithoutCancel(ctx), "rm", "-f", name) }()
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeTar(pw, files, links)) }()
	if _, err := b.Docker.Input(ctx, pr, "cp", "-", name+":/"); err != nil {
		return false, err
	}
	args := []string{"commit"}
	for _, c := range append(changes, "LABEL labctl.hash="+hash) {
		args = append(args, "--change", c)
	}
	if _, err := b.Docker.Output(ctx, append(args, name, tag)...); err != nil {
		return false, err
	}
	return true, b.keep(ctx, tag, hash)
}

// importImage makes an image of files alone (docker import).
func (b *Bed) importImage(ctx context.Context, tag string, files []tarFile, entrypoint string) (bool, error) {
	hash, err := hashInputs([]string{entrypoint}, files)
	if err != nil {
		return false, err
	}
	if b.cached(ctx, tag, hash) {
		return false, nil
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeTar(pw, files, nil)) }()
	if _, err := b.Docker.Input(ctx, pr, "import", "--change", entrypoint, "--change", "LABEL labctl.hash="+hash, "-", tag); err != nil {
		return false, err
	}
	return true, b.keep(ctx, tag, hash)
}

// cacheTag is the bed's own name for the image it built for tag from
// inputs hashing to hash. It keeps the image while tag is untagged (for a
// push and pull through the bed's registry) or moved.
func cacheTag(tag, hash string) string {
	repo, _ := splitRef(tag)
	return "labctl-testbed/" + strings.ReplaceAll(repo, "/", "-") + ":" + hash
}

// cached tags tag from its cache tag when an image of these inputs was
// built before.
func (b *Bed) cached(ctx context.Context, tag, hash string) bool {
	ct := cacheTag(tag, hash)
	if b.imageHash(ctx, ct) != hash {
		return false
	}
	_, err := b.Docker.Output(ctx, "tag", ct, tag)
	return err == nil
}

// keep gives a new build its cache tag and removes the bed's builds for
// tag from other inputs, then any untagged image of the bed's, so that
// rebuilds do not fill the Docker host's disk.
func (b *Bed) keep(ctx context.Context, tag, hash string) error {
	ct := cacheTag(tag, hash)
	if _, err := b.Docker.Output(ctx, "tag", tag, ct); err != nil {
		return err
	}
	repo, _, _ := strings.Cut(ct, ":")
	out, err := b.Docker.Output(ctx, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repo)
	if err != nil {
		return err
	}
	for _, old := range strings.Fields(out) {
		if old != ct {
			_, _ = b.Docker.Output(ctx, "image", "rm", old)
		}
	}
	_, err = b.Docker.Output(ctx, "image", "prune", "-f", "--filter", "label=labctl.hash")
	return err
}

package testbed

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Flux on the bed: source-controller and kustomize-controller built from
// the module proxy (e2e/tools/flux), packed as the images Flux's install
// manifests name, and an offline manifests directory generated from the
// controllers' config/ and flux2's manifests/ at the same release, which
// flux2's install.Generate (and `kubectl apply -k`) accept.
const (
	// FluxVersion is the Flux release whose controllers the bed builds.
	FluxVersion = "v2.9.5"
	// FluxControllersVersion is source- and kustomize-controller's version
	// in that release.
	FluxControllersVersion = "v1.9.5"
)

// FluxComponents are the controllers the bed can run; helm-controller and
// notification-controller list no versions on the module proxy.
var FluxComponents = []string{"source-controller", "kustomize-controller"}

// FluxBuild is what BuildFlux made.
type FluxBuild struct {
	Dir string // binaries
	// Manifests is the install overlay (its install/ directory is the
	// kustomization to build or give install.Generate as BaseURL).
	Manifests string
}

// BuildFlux builds the controllers (cached by the tools module's go.mod and
// go.sum) and writes the offline manifests directory.
func BuildFlux(ctx context.Context, cache string, log func(string, ...any)) (*FluxBuild, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	src, err := sourceDir("../tools/flux")
	if err != nil {
		return nil, err
	}
	sum, err := moduleHash(src)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cache, "flux-"+FluxControllersVersion+"-"+sum)
	missing := false
	for _, c := range FluxComponents {
		if _, err := os.Stat(filepath.Join(dir, c)); err != nil {
			missing = true
		}
	}
	if missing {
		start := time.Now()
		log("flux: building %s %s (cold: several minutes)", strings.Join(FluxComponents, ", "), FluxControllersVersion)
		args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w", "-o", dir + "/"}
		for _, c := range FluxComponents {
			args = append(args, "github.com/fluxcd/"+c)
		}
		if err := goBuild(ctx, src, args...); err != nil {
			return nil, err
		}
		log("flux: built in %s", time.Since(start).Round(time.Second))
	}
	fb := &FluxBuild{Dir: dir, Manifests: filepath.Join(dir, "manifests")}
	if err := fluxManifests(ctx, src, fb.Manifests); err != nil {
		return nil, fmt.Errorf("flux manifests: %w", err)
	}
	return fb, nil
}

// moduleDir is where the module cache holds mod@version's source.
func moduleDir(ctx context.Context, src, modVersion string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", modVersion)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %w", modVersion, err)
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(out, &m); err != nil {
		return "", fmt.Errorf("go mod download %s: %w", modVersion, err)
	}
	if m.Dir == "" {
		return "", fmt.Errorf("go mod download %s: %s", modVersion, m.Error)
	}
	return m.Dir, nil
}

// fluxManifests lays out flux2's manifests/ with the release downloads of
// each base (CRDs and deployment) replaced by files made from the
// controller's own config/, and an install kustomization limited to
// FluxComponents.
func fluxManifests(ctx context.Context, src, out string) error {
	flux, err := moduleDir(ctx, src, "github.com/fluxcd/flux2/v2@"+FluxVersion)
	if err != nil {
		return err
	}
	_ = os.RemoveAll(out)
	m := filepath.Join(flux, "manifests")
	for _, d := range []string{"rbac", "policies"} {
		if err := copyDir(filepath.Join(m, d), filepath.Join(out, d)); err != nil {
			return err
		}
	}
	for _, f := range []string{"namespace.yaml", "labels.yaml"} {
		if err := copyDir(filepath.Join(m, "install", f), filepath.Join(out, "install", f)); err != nil {
			return err
		}
	}
	var resources, images []string
	for _, c := range FluxComponents {
		ctrl, err := moduleDir(ctx, src, "github.com/fluxcd/"+c+"@"+FluxControllersVersion)
		if err != nil {
			return err
		}
		base := filepath.Join(out, "bases", c)
		if err := copyDir(filepath.Join(m, "bases", c), base); err != nil {
			return err
		}
		crds, err := filepath.Glob(filepath.Join(ctrl, "config", "crd", "bases", "*.yaml"))
		if err != nil || len(crds) == 0 {
			return fmt.Errorf("%s: no CRDs in config/crd/bases", c)
		}
		sort.Strings(crds)
		if err := concatYAML(filepath.Join(base, c+".crds.yaml"), crds, nil); err != nil {
			return err
		}
		mgr := filepath.Join(ctrl, "config", "manager")
		// What the release's kustomize build of config/manager does: the
		// image gets the release tag.
		tag := strings.NewReplacer("image: fluxcd/"+c+"\n", "image: fluxcd/"+c+":"+FluxControllersVersion+"\n")
		var parts []string
		for _, f := range []string{"service.yaml", "deployment.yaml"} {
			if _, err := os.Stat(filepath.Join(mgr, f)); err == nil {
				parts = append(parts, filepath.Join(mgr, f))
			}
		}
		if err := concatYAML(filepath.Join(base, c+".deployment.yaml"), parts, tag); err != nil {
			return err
		}
		k, err := os.ReadFile(filepath.Join(base, "kustomization.yaml"))
		if err != nil {
			return err
		}
		rel := "https://github.com/fluxcd/" + c + "/releases/download/" + FluxControllersVersion + "/"
		if !bytes.Contains(k, []byte(rel)) {
			return fmt.Errorf("%s: flux2 %s's base does not name %s", c, FluxVersion, rel)
		}
		if err := os.WriteFile(filepath.Join(base, "kustomization.yaml"), bytes.ReplaceAll(k, []byte(rel), nil), 0o644); err != nil {
			return err
		}
		resources = append(resources, "  - ../bases/"+c)
		images = append(images, "  - name: fluxcd/"+c+"\n    newName: ghcr.io/fluxcd/"+c)
	}
	install := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: flux-system\nresources:\n  - namespace.yaml\n" +
		strings.Join(resources, "\n") + "\n  - ../rbac\n  - ../policies\ntransformers:\n  - labels.yaml\nimages:\n" + strings.Join(images, "\n") + "\n"
	return os.WriteFile(filepath.Join(out, "install", "kustomization.yaml"), []byte(install), 0o644)
}

func concatYAML(out string, files []string, r *strings.Replacer) error {
	var b bytes.Buffer
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		s := string(data)
		if r != nil {
			s = r.Replace(s)
		}
		if b.Len() > 0 {
			b.WriteString("---\n")
		}
		b.WriteString(strings.TrimPrefix(s, "---\n"))
		if !strings.HasSuffix(s, "\n") {
			b.WriteString("\n")
		}
	}
	return os.WriteFile(out, b.Bytes(), 0o644)
}

// copyDir copies a file or a directory tree (module cache files are
// read-only; the copies are writable).
func copyDir(from, to string) error {
	return filepath.Walk(from, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if info.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
}

// FluxImages packs each controller as ghcr.io/fluxcd/<name>:<version>
// (non-root user 65534, writable /tmp) and saves it into dir/images as an
// air-gap image tarball; a tarball is kept while its binary is unchanged.
func (b *Bed) FluxImages(ctx context.Context, fb *FluxBuild) ([]string, error) {
	var tars []string
	for _, c := range FluxComponents {
		tag := "ghcr.io/fluxcd/" + c + ":" + FluxControllersVersion
		out := filepath.Join(fb.Dir, "images", c+".tar")
		hash, err := hashInputs([]string{tag}, []tarFile{{"usr/local/bin/" + c, filepath.Join(fb.Dir, c), 0o755}})
		if err != nil {
			return nil, err
		}
		if old, err := os.ReadFile(out + ".sum"); err == nil && string(old) == hash {
			if _, err := os.Stat(out); err == nil {
				tars = append(tars, out)
				continue
			}
		}
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return nil, err
		}
		files := []tarFile{{"usr/local/bin/" + c, filepath.Join(fb.Dir, c), 0o755}}
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(writeTarDirs(pw, files, []string{"tmp/", "data/"})) }()
		if _, err := b.Docker.Input(ctx, pr, "import", "--change", `ENTRYPOINT ["/usr/local/bin/`+c+`"]`, "--change", "USER 65534:65534", "-", tag); err != nil {
			return nil, err
		}
		if _, err := b.Docker.Output(ctx, "save", "-o", out, tag); err != nil {
			return nil, err
		}
		if err := os.WriteFile(out+".sum", []byte(hash), 0o644); err != nil {
			return nil, err
		}
		tars = append(tars, out)
	}
	return tars, nil
}

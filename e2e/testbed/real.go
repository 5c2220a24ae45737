package testbed

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"
)

// RealImages reports whether the k3d tests run in real-images mode
// (LABCTL_E2E_REAL_IMAGES=1, which `make e2e` sets): k3d finds no image
// and pulls rancher/k3s and its helpers by their real names. The users'
// GitHub workflow runs it on a runner's Docker, pulling from docker.io
// and ghcr.io, Flux from its v2.6.4 release. On the bed's own dockerd the
// same names are pulled from the bed's registry (Registry), where the bed
// pushed its builds: what differs is where the bytes come from, and Flux
// (see PrepareK3d).
func RealImages() bool { return os.Getenv("LABCTL_E2E_REAL_IMAGES") == "1" }

// K3dSetup is what a k3d test puts in its profile.
type K3dSetup struct {
	K3sImage string
	// FluxVersion, FluxManifests and FluxComponents fill spec.flux:
	// the bed's locally built controllers, or the release (empty
	// manifests and components: Flux's defaults).
	FluxVersion    string
	FluxManifests  string
	FluxComponents []string
	// Registry is the bed's registry the images are pulled from in
	// real-images mode on the bed; nil otherwise.
	Registry *Registry
}

// K3dPulled are the images k3d pulls for a cluster.
func (s K3dSetup) K3dPulled() []string {
	return []string{s.K3sImage, K3dProxyImage, K3dToolsImage}
}

// PrepareK3d makes the images a k3d cluster needs.
//
// In real-images mode on a Docker the bed did not start (a GitHub
// runner's), nothing: k3d and Flux pull them (LABCTL_E2E_K3S_IMAGE picks
// the K3s image).
//
// Otherwise the bed builds the stand-in K3s image (carrying Flux's
// controllers as air-gap images) and k3d's proxy and tools images, under
// their real names. In real-images mode it then pushes them to its
// registry and untags them (its cache tags keep the layers, as a host
// that pulled them before keeps them), so that k3d's create pulls each
// by name through dockerd's proxy. Flux stays the bed's build, since the
// release's controllers (flux2 v2.6.4: source- and kustomize-controller
// v1.6.x, helm-controller v1.3.0) are refused by the module proxy here.
func (b *Bed) PrepareK3d(ctx context.Context, withFlux bool, log func(string, ...any)) (K3dSetup, error) {
	if RealImages() && !b.Docker.Own {
		img := os.Getenv("LABCTL_E2E_K3S_IMAGE")
		if img == "" {
			img = K3sImage
		}
		return K3dSetup{K3sImage: img, FluxVersion: "v2.6.4"}, nil
	}
	bin, err := BuildKube(ctx, CacheDir(), log)
	if err != nil {
		return K3dSetup{}, err
	}
	// Flux's images ride in every node image, with Flux installed or not,
	// so that one name has one content (a registry's tag does).
	fb, err := BuildFlux(ctx, CacheDir(), log)
	if err != nil {
		return K3dSetup{}, err
	}
	extra, err := b.FluxImages(ctx, fb)
	if err != nil {
		return K3dSetup{}, err
	}
	s := K3dSetup{K3sImage: K3sImage}
	if withFlux {
		s.FluxVersion, s.FluxManifests, s.FluxComponents = FluxVersion, fb.Manifests+"/install", FluxComponents
	}
	if err := b.K3dImages(ctx, bin, log, extra...); err != nil {
		return K3dSetup{}, err
	}
	if !RealImages() {
		return s, nil
	}
	if s.Registry, err = b.registryRunning(ctx, log); err != nil {
		return K3dSetup{}, err
	}
	start := time.Now()
	for _, img := range s.K3dPulled() {
		if _, err := b.Docker.Output(ctx, "push", "--quiet", img); err != nil {
			return K3dSetup{}, fmt.Errorf("push %s to the bed's registry: %w (registry log: %s)", img, err, s.Registry.Log)
		}
		if _, err := b.Docker.Output(ctx, "image", "rm", img); err != nil {
			return K3dSetup{}, err
		}
	}
	log("registry: %s pushed and untagged in %s; k3d pulls them", strings.Join(s.K3dPulled(), ", "), time.Since(start).Round(time.Millisecond))
	return s, nil
}

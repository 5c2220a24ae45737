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
	// NodeEnv goes into spec.k3d.env: in real-images mode on the bed with
	// Flux, the nodes' containerd pulls Flux's controllers through the
	// bed's proxy (CONTAINERD_HTTPS_PROXY), as a homelab behind a proxy.
	NodeEnv map[string]string
	// FluxImages are the controllers' images the nodes pull then.
	FluxImages []string
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
// Otherwise the bed builds the stand-in K3s image and k3d's proxy and
// tools images, under their real names. Without real images the node
// image carries Flux's controllers as air-gap images, with Flux
// installed or not, so that one name has one content.
//
// In real-images mode it pushes them to its registry and untags them
// (its cache tags keep the layers, as a host that pulled them before
// keeps them), so that k3d's create pulls each by name through dockerd's
// proxy; withFlux, it pushes Flux's controllers too, and the nodes'
// containerd pulls them from ghcr.io through the bed's proxy (NodeEnv),
// trusting the bed's CA, which the node image carries. Flux stays the
// bed's build: the release's controllers (flux2 v2.6.4: source- and
// kustomize-controller v1.6.x, helm-controller v1.3.0) are refused by
// the module proxy here, and so is every helm-controller version.
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
	s := K3dSetup{K3sImage: K3sImage}
	var fb *FluxBuild
	var tars []string
	if withFlux || !RealImages() {
		if fb, err = BuildFlux(ctx, CacheDir(), log); err != nil {
			return K3dSetup{}, err
		}
		if tars, err = b.FluxImages(ctx, fb); err != nil {
			return K3dSetup{}, err
		}
	}
	if withFlux {
		s.FluxVersion, s.FluxManifests, s.FluxComponents = FluxVersion, fb.Manifests+"/install", FluxComponents
	}
	if !RealImages() {
		return s, b.K3dImages(ctx, bin, log, tars...)
	}
	if err := b.K3dImages(ctx, bin, log); err != nil {
		return K3dSetup{}, err
	}
	if s.Registry, err = b.registryRunning(ctx, log); err != nil {
		return K3dSetup{}, err
	}
	start := time.Now()
	for _, img := range s.K3dPulled() {
		if err := b.push(ctx, s.Registry, img); err != nil {
			return K3dSetup{}, err
		}
		if _, err := b.Docker.Output(ctx, "image", "rm", img); err != nil {
			return K3dSetup{}, err
		}
	}
	if withFlux {
		for i, c := range FluxComponents {
			img := "ghcr.io/fluxcd/" + c + ":" + FluxControllersVersion
			if _, err := b.Docker.Output(ctx, "image", "inspect", "--format", "{{.Id}}", img); err != nil {
				if _, err := b.Docker.Output(ctx, "load", "-q", "-i", tars[i]); err != nil {
					return K3dSetup{}, err
				}
			}
			if err := b.push(ctx, s.Registry, img); err != nil {
				return K3dSetup{}, err
			}
			s.FluxImages = append(s.FluxImages, img)
		}
		u, err := b.proxy.listenOn(b.bridgeGW)
		if err != nil {
			return K3dSetup{}, err
		}
		s.NodeEnv = map[string]string{"CONTAINERD_HTTPS_PROXY": u, "CONTAINERD_HTTP_PROXY": u, "CONTAINERD_NO_PROXY": "localhost,127.0.0.1"}
	}
	log("registry: %s pushed in %s; k3d pulls them, and the nodes Flux's", strings.Join(append(s.K3dPulled(), s.FluxImages...), ", "), time.Since(start).Round(time.Millisecond))
	return s, nil
}

func (b *Bed) push(ctx context.Context, r *Registry, img string) error {
	if _, err := b.Docker.Output(ctx, "push", "--quiet", img); err != nil {
		return fmt.Errorf("push %s to the bed's registry: %w (registry log: %s)", img, err, r.Log)
	}
	return nil
}

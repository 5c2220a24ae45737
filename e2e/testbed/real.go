package testbed

import (
	"context"
	"os"
)

// RealImages reports whether the k3d tests run on the real
// rancher/k3s image and the real Flux release (LABCTL_E2E_REAL_IMAGES=1),
// as the users' GitHub workflow does with registries at hand. Here no
// registry is reachable, so the bed builds stand-ins under the same names.
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
}

// PrepareK3d makes the images a k3d cluster needs: with real images,
// nothing (k3d and Flux pull them; LABCTL_E2E_K3S_IMAGE picks the K3s
// image); otherwise the stand-in K3s image, k3d's proxy and tools images
// and, withFlux, Flux's controllers as air-gap images.
func (b *Bed) PrepareK3d(ctx context.Context, withFlux bool, log func(string, ...any)) (K3dSetup, error) {
	if RealImages() {
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
	var extra []string
	if withFlux {
		fb, err := BuildFlux(ctx, CacheDir(), log)
		if err != nil {
			return K3dSetup{}, err
		}
		if extra, err = b.FluxImages(ctx, fb); err != nil {
			return K3dSetup{}, err
		}
		s.FluxVersion, s.FluxManifests, s.FluxComponents = FluxVersion, fb.Manifests+"/install", FluxComponents
	}
	return s, b.K3dImages(ctx, bin, log, extra...)
}

package profiles

import "strings"

// Defaults filled in after loading, so `profiles show` prints what a
// command will actually use.
const (
	DefaultSSHPort          = 22
	DefaultInstallScriptURL = "https://get.k3s.io"
	DefaultK3sImageRepo     = "docker.io/rancher/k3s"
	DefaultClusterCIDR      = "10.42.0.0/16"
	DefaultServiceCIDR      = "10.43.0.0/16"
)

func applyDefaults(p *Profile) {
	s := &p.Spec
	if s.K3s.ClusterCIDR == "" {
		s.K3s.ClusterCIDR = DefaultClusterCIDR
	}
	if s.K3s.ServiceCIDR == "" {
		s.K3s.ServiceCIDR = DefaultServiceCIDR
	}
	if s.K3s.InstallScriptURL == "" && len(s.Nodes) > 0 {
		s.K3s.InstallScriptURL = DefaultInstallScriptURL
	}
	if s.SSH != nil && s.SSH.Port == 0 {
		s.SSH.Port = DefaultSSHPort
	}
	if f := &s.Flux; f.URL != "" {
		if f.Version == "" {
			f.Version = DefaultFluxVersion
		}
		if len(f.Components) == 0 {
			f.Components = append([]string(nil), DefaultFluxComponents...)
		}
		if f.TokenRef != nil && f.Username == "" {
			f.Username = "git"
		}
	}
	if k := s.K3d; k != nil {
		if k.ClusterName == "" {
			k.ClusterName = p.Metadata.Name
		}
		if k.Image == "" && s.K3s.Version != "" {
			k.Image = DefaultK3sImageRepo + ":" + ImageTag(s.K3s.Version)
		}
	}
}

// ImageTag turns a K3s version (v1.33.4+k3s1) into its image tag
// (v1.33.4-k3s1): OCI tags cannot carry '+'.
func ImageTag(version string) string { return strings.ReplaceAll(version, "+", "-") }

// DefaultFluxVersion is the Flux release installed when the profile names
// none: the one labctl's flux2 library is.
const DefaultFluxVersion = "v2.6.4"

// DefaultFluxComponents are Flux's default controllers.
var DefaultFluxComponents = []string{"source-controller", "kustomize-controller", "helm-controller", "notification-controller"}

package facts

import "slices"

// Names in the cluster that the architecture fixes and verify looks at.
const (
	// NodePasswordSuffix: K3s keeps a node's password hash in the Secret
	// kube-system/<node>.node-password.k3s.
	NodePasswordSuffix = ".node-password.k3s"
	// IngressNamespace and IngressService are K3s's packaged Traefik.
	IngressNamespace = "kube-system"
	IngressService   = "traefik"
	// LonghornNamespace holds Longhorn's settings.
	LonghornNamespace = "longhorn-system"
	// MonitoringNamespace and GrafanaName are kube-prometheus-stack's
	// Grafana (its admin Secret has the same name).
	MonitoringNamespace = "monitoring"
	GrafanaName         = "kube-prometheus-stack-grafana"
	// SOPSSecret is the age key Flux decrypts with (flux-system).
	SOPSSecret = "sops-age"
)

// API is what the cluster's API says about the things verify checks;
// Secrets are names only (values are never read).
type API struct {
	Nodes []KubeNode `json:"nodes"`
	// Secrets are "namespace/name" of the Secrets verify looks for.
	Secrets        []string       `json:"secrets"`
	StorageClasses []StorageClass `json:"storageClasses"`
	// Longhorn is nil when Longhorn is not installed.
	Longhorn *Longhorn `json:"longhorn,omitempty"`
	// Ingress is Traefik's Service, nil when there is none.
	Ingress *Service `json:"ingress,omitempty"`
	// Grafana: kube-prometheus-stack's Grafana Deployment exists.
	Grafana bool `json:"grafana"`
}

// HasSecret: the Secret namespace/name exists.
func (a API) HasSecret(namespace, name string) bool {
	return slices.Contains(a.Secrets, namespace+"/"+name)
}

// StorageClass is one StorageClass.
type StorageClass struct {
	Name        string `json:"name"`
	Provisioner string `json:"provisioner"`
	Default     bool   `json:"default"`
}

// Longhorn is Longhorn's settings that the profile fixes.
type Longhorn struct {
	Replicas string `json:"replicas"`
	DataPath string `json:"dataPath"`
}

// Service is a Service's type and the addresses it is published on.
type Service struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Type      string   `json:"type"`
	IPs       []string `json:"ips,omitempty"`
}

// Kustomization is one Flux Kustomization as the cluster has it.
type Kustomization struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Path      string   `json:"path"`
	DependsOn []string `json:"dependsOn,omitempty"`
	Ready     bool     `json:"ready"`
	// Reason and Message are the Ready condition's.
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	// Applied is the last applied revision.
	Applied string `json:"applied,omitempty"`
	// Requested is the reconcile.fluxcd.io/requestedAt annotation, and
	// Handled the controller's lastHandledReconcileAt.
	Requested string `json:"-"`
	Handled   string `json:"-"`
	// Stale: its Ready condition is of an older generation.
	Stale bool `json:"-"`
}

// FluxState is Flux's sync and every Kustomization in the cluster.
type FluxState struct {
	// URL and Branch are flux-system's GitRepository's; Path is
	// flux-system's Kustomization's.
	URL    string `json:"url"`
	Branch string `json:"branch"`
	Path   string `json:"path"`
	// Revision is the source's latest fetched revision; SourceReady and
	// SourceMessage its Ready condition.
	Revision      string          `json:"revision"`
	SourceReady   bool            `json:"sourceReady"`
	SourceMessage string          `json:"sourceMessage,omitempty"`
	Kustomization []Kustomization `json:"kustomizations"`
}

// Find returns the Kustomization of that name.
func (f FluxState) Find(name string) (Kustomization, bool) {
	for _, k := range f.Kustomization {
		if k.Name == name {
			return k, true
		}
	}
	return Kustomization{}, false
}

// DNSAnswer is what a name resolved to.
type DNSAnswer struct {
	Addrs []string `json:"addrs,omitempty"`
	Err   string   `json:"error,omitempty"`
}

// DockerHost is a k3d cluster's Docker host, where it can be read.
type DockerHost struct {
	// DataRoot is Docker's data directory and its filesystem's use.
	DataRoot string `json:"dataRoot"`
	SizeKB   int64  `json:"sizeKB"`
	FreeKB   int64  `json:"freeKB"`
	// InotifyWatches and InotifyInstances are the host kernel's limits
	// (k3d's nodes share them); 0 when unknown.
	InotifyWatches   int `json:"inotifyWatches"`
	InotifyInstances int `json:"inotifyInstances"`
	// Ports are the host ports the cluster's load balancer publishes,
	// "hostIP:hostPort->containerPort".
	Ports []string `json:"ports"`
}

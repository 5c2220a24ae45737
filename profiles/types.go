// Package profiles is the model of a cluster: the versioned Profile type,
// the embedded default profiles (staging, production, local), loading with
// strict decoding and `extends`, and validation whose every error names the
// file, the field path and the line.
//
// A profile never holds a secret value: secrets are SecretRefs to an
// environment variable or a file, resolved only when a command needs them.
package profiles

import (
	"net/url"
	"strconv"
	"strings"
)

// APIVersion and Kind head every profile file.
const (
	APIVersion = "labctl.dev/v1alpha1"
	Kind       = "Profile"
)

// Environments a profile may target. The Flux path must be clusters/<environment>.
const (
	EnvStaging    = "staging"
	EnvProduction = "production"
)

// Node roles.
const (
	RoleServer = "server"
	RoleAgent  = "agent"
	// RoleDockerHost is a k3d cluster's Docker host as a machine
	// (Spec.DockerHostMachine); never a role in a profile.
	RoleDockerHost = "docker-host"
)

// Profile describes one cluster: where its machines come from, how K3s is
// installed on them, and which GitOps path Flux reconciles.
type Profile struct {
	APIVersion string   `yaml:"apiVersion" json:"apiVersion" enum:"labctl.dev/v1alpha1"`
	Kind       string   `yaml:"kind" json:"kind" enum:"Profile"`
	Metadata   Metadata `yaml:"metadata" json:"metadata"`
	// Extends names another profile (embedded or from the profiles
	// directory) that this file is laid over: mappings merge key by key,
	// lists and scalars given here replace the base's.
	Extends string `yaml:"extends,omitempty" json:"extends,omitempty"`
	Spec    Spec   `yaml:"spec" json:"spec"`
}

// Metadata names the profile.
type Metadata struct {
	Name        string `yaml:"name" json:"name"`
	Description string `yaml:"description,omitempty" json:"description,omitempty"`
}

// Spec is the cluster. Exactly one of K3d (a k3d cluster on a Docker host)
// or Nodes (K3s installed over SSH, optionally on Proxmox VMs) is set.
type Spec struct {
	Environment  string        `yaml:"environment" json:"environment" enum:"staging,production"`
	K3s          K3s           `yaml:"k3s" json:"k3s"`
	Network      *Network      `yaml:"network,omitempty" json:"network,omitempty"`
	Nodes        []Node        `yaml:"nodes,omitempty" json:"nodes,omitempty"`
	SSH          *SSH          `yaml:"ssh,omitempty" json:"ssh,omitempty"`
	Proxmox      *Proxmox      `yaml:"proxmox,omitempty" json:"proxmox,omitempty"`
	K3d          *K3d          `yaml:"k3d,omitempty" json:"k3d,omitempty"`
	Storage      Storage       `yaml:"storage" json:"storage"`
	Ingress      Ingress       `yaml:"ingress" json:"ingress"`
	DNS          DNS           `yaml:"dns" json:"dns"`
	Certificates *Certificates `yaml:"certificates,omitempty" json:"certificates,omitempty"`
	Flux         Flux          `yaml:"flux" json:"flux"`
	// Hosts is the tuning of every SSH node, or of a k3d cluster's Docker
	// host reached over SSH, applied with the host prerequisites and
	// checked by preflight and verify.
	Hosts *Hosts `yaml:"hosts,omitempty" json:"hosts,omitempty"`
}

// Hosts is host tuning a cluster of this shape needs.
type Hosts struct {
	// Sysctl settings, written to /etc/sysctl.d/90-labctl.conf (Debian
	// does not always read /etc/sysctl.conf) and applied at once.
	Sysctl map[string]string `yaml:"sysctl,omitempty" json:"sysctl,omitempty"`
	// Journald is the journal's storage, through a drop-in under
	// /etc/systemd/journald.conf.d/.
	Journald *Journald `yaml:"journald,omitempty" json:"journald,omitempty"`
	// Packages are Debian packages installed besides Longhorn's.
	Packages []string `yaml:"packages,omitempty" json:"packages,omitempty"`
}

// Journald keeps the logs across reboots.
type Journald struct {
	// Persistent is Storage=persistent (logs under /var/log/journal).
	Persistent bool `yaml:"persistent" json:"persistent"`
	// MaxUse caps the journal on disk (SystemMaxUse), such as 1G.
	MaxUse string `yaml:"maxUse,omitempty" json:"maxUse,omitempty"`
}

// K3s is the Kubernetes distribution's settings, identical on every server.
type K3s struct {
	// Version is a K3s release, e.g. v1.33.4+k3s1.
	Version     string `yaml:"version" json:"version" pattern:"^v1\\.\\d{2,}\\.\\d+\\+k3s\\d+$"`
	ClusterCIDR string `yaml:"clusterCIDR,omitempty" json:"clusterCIDR,omitempty"`
	ServiceCIDR string `yaml:"serviceCIDR,omitempty" json:"serviceCIDR,omitempty"`
	// Disable lists packaged components to turn off (K3s --disable). Empty
	// keeps the K3s defaults, Traefik and ServiceLB among them.
	Disable []string `yaml:"disable,omitempty" json:"disable,omitempty"`
	// TokenRef points at an existing cluster token; without it labctl
	// generates one and keeps it in its local state.
	TokenRef *SecretRef `yaml:"tokenRef,omitempty" json:"tokenRef,omitempty"`
	// InstallScriptURL is where the official install script is fetched from.
	InstallScriptURL string `yaml:"installScriptURL,omitempty" json:"installScriptURL,omitempty"`
	// Airgap installs from local files uploaded to each node instead.
	Airgap *Airgap `yaml:"airgap,omitempty" json:"airgap,omitempty"`
	// Config is extra config.yaml keys for every server, with K3s's own
	// names (disable-helm-controller: true, kubelet-arg, node-taint,
	// etcd-snapshot-schedule-cron, secrets-encryption, …). Keys labctl
	// sets from other fields (token, server, node-ip, tls-san, the
	// CIDRs, disable) are refused with the field that sets them.
	Config K3sConfig `yaml:"config,omitempty" json:"config,omitempty"`
	// EtcdMount is the mount point of the disk meant for etcd (an SSD,
	// not the SD card or eMMC the node boots from), named, never
	// discovered: labctl keeps K3s's server/db there, bind-mounted from
	// <etcdMount>/k3s-db before K3s first starts and recorded in fstab.
	EtcdMount string `yaml:"etcdMount,omitempty" json:"etcdMount,omitempty"`
	// AgentConfig is extra config.yaml keys for every agent (options of
	// `k3s agent` only).
	AgentConfig K3sConfig `yaml:"agentConfig,omitempty" json:"agentConfig,omitempty"`
}

// Airgap names local files for an install without downloads.
type Airgap struct {
	// Binary is the k3s binary of spec.k3s.version.
	Binary string `yaml:"binary" json:"binary"`
	// InstallScript is K3s's install.sh.
	InstallScript string `yaml:"installScript" json:"installScript"`
	// Images is an optional images tarball (k3s-airgap-images-*.tar[.zst]).
	Images string `yaml:"images,omitempty" json:"images,omitempty"`
}

// Network is the node subnet of an SSH-provisioned cluster.
type Network struct {
	// Subnet in CIDR notation; every node address must lie inside it.
	Subnet      string   `yaml:"subnet" json:"subnet"`
	Gateway     string   `yaml:"gateway" json:"gateway"`
	Nameservers []string `yaml:"nameservers,omitempty" json:"nameservers,omitempty"`
	// SearchDomain is handed to cloud-init.
	SearchDomain string `yaml:"searchDomain,omitempty" json:"searchDomain,omitempty"`
}

// Node is one machine of an SSH-provisioned cluster.
type Node struct {
	Name    string `yaml:"name" json:"name"`
	Address string `yaml:"address" json:"address"`
	Role    string `yaml:"role" json:"role" enum:"server,agent"`
	// VMID is the Proxmox VM id; 0 lets Proxmox choose the next free id.
	VMID int `yaml:"vmid,omitempty" json:"vmid,omitempty"`
}

// SSH says how labctl reaches the nodes.
type SSH struct {
	User           string   `yaml:"user" json:"user"`
	Port           int      `yaml:"port,omitempty" json:"port,omitempty"`
	IdentityFiles  []string `yaml:"identityFiles,omitempty" json:"identityFiles,omitempty"`
	KnownHostsFile string   `yaml:"knownHostsFile,omitempty" json:"knownHostsFile,omitempty"`
	// JumpHost is user@host[:port] of a bastion, if the nodes are behind one.
	JumpHost string `yaml:"jumpHost,omitempty" json:"jumpHost,omitempty"`
	// SudoPasswordRef is needed when the user is not root and sudo asks.
	SudoPasswordRef *SecretRef `yaml:"sudoPasswordRef,omitempty" json:"sudoPasswordRef,omitempty"`
}

// Proxmox is where the nodes' VMs are created. Without it the nodes are
// taken as given (already installed machines).
type Proxmox struct {
	// Endpoint is the API URL; empty means PROXMOX_VE_ENDPOINT.
	Endpoint string `yaml:"endpoint,omitempty" json:"endpoint,omitempty"`
	// TokenRef holds "user@realm!tokenid=uuid".
	TokenRef SecretRef `yaml:"tokenRef" json:"tokenRef"`
	// CAFile or Fingerprint verifies the API's TLS certificate.
	CAFile      string `yaml:"caFile,omitempty" json:"caFile,omitempty"`
	Fingerprint string `yaml:"fingerprint,omitempty" json:"fingerprint,omitempty"`
	// Node is the PVE cluster node the VMs are created on.
	Node     string   `yaml:"node" json:"node"`
	Template string   `yaml:"template" json:"template"`
	Storage  string   `yaml:"storage" json:"storage"`
	VM       VMSize   `yaml:"vm" json:"vm"`
	Bridge   string   `yaml:"bridge,omitempty" json:"bridge,omitempty"`
	SSHKeys  []string `yaml:"sshKeys,omitempty" json:"sshKeys,omitempty"`
}

// VMSize is the shape of every VM.
type VMSize struct {
	Cores     int `yaml:"cores" json:"cores"`
	MemoryMiB int `yaml:"memoryMiB" json:"memoryMiB"`
	DiskGiB   int `yaml:"diskGiB" json:"diskGiB"`
}

// K3d is a k3d cluster on a Docker host.
type K3d struct {
	// ClusterName defaults to the profile name.
	ClusterName string `yaml:"clusterName,omitempty" json:"clusterName,omitempty"`
	// DockerHost is the Docker endpoint (ssh://user@host, tcp://…, unix://…);
	// empty means the local Docker.
	DockerHost string `yaml:"dockerHost,omitempty" json:"dockerHost,omitempty"`
	// DockerContext names a Docker CLI context (docker context ls) to
	// use instead; not together with DockerHost.
	DockerContext string `yaml:"dockerContext,omitempty" json:"dockerContext,omitempty"`
	// APIHost is the address written into the kubeconfig.
	APIHost string `yaml:"apiHost" json:"apiHost"`
	APIPort int    `yaml:"apiPort" json:"apiPort"`
	Servers int    `yaml:"servers" json:"servers"`
	Agents  int    `yaml:"agents" json:"agents"`
	// Image defaults to rancher/k3s with the tag of spec.k3s.version.
	Image string    `yaml:"image,omitempty" json:"image,omitempty"`
	Ports []K3dPort `yaml:"ports,omitempty" json:"ports,omitempty"`
	// Env is set in every server and agent container (k3d's
	// --env NAME=value@server:*;agent:*), fixed when the cluster is
	// created. For pulls through a proxy, K3s gives the CONTAINERD_-
	// prefixed variables (CONTAINERD_HTTPS_PROXY, CONTAINERD_NO_PROXY, …)
	// to containerd alone, without the prefix.
	Env map[string]string `yaml:"env,omitempty" json:"env,omitempty"`
}

// K3dPort maps a host port to a container port on the chosen k3d nodes.
type K3dPort struct {
	HostPort      int    `yaml:"hostPort" json:"hostPort"`
	ContainerPort int    `yaml:"containerPort" json:"containerPort"`
	NodeFilter    string `yaml:"nodeFilter" json:"nodeFilter"`
}

// Storage is the default StorageClass and what it needs on the hosts.
type Storage struct {
	// DefaultClass is local-path or longhorn.
	DefaultClass string     `yaml:"defaultClass" json:"defaultClass" enum:"local-path,longhorn"`
	LocalPath    *LocalPath `yaml:"localPath,omitempty" json:"localPath,omitempty"`
	Longhorn     *Longhorn  `yaml:"longhorn,omitempty" json:"longhorn,omitempty"`
}

// LocalPath is K3s's bundled local-path provisioner.
type LocalPath struct {
	Path string `yaml:"path" json:"path"`
}

// Longhorn's host prerequisites and defaults.
type Longhorn struct {
	Replicas            int    `yaml:"replicas" json:"replicas"`
	DataPath            string `yaml:"dataPath" json:"dataPath"`
	ReplicaAntiAffinity bool   `yaml:"replicaAntiAffinity" json:"replicaAntiAffinity"`
	AutoBalance         string `yaml:"autoBalance" json:"autoBalance" enum:"disabled,least-effort,best-effort"`
}

// Ingress is the cluster's ingress path.
type Ingress struct {
	Controller string `yaml:"controller" json:"controller" enum:"traefik"`
	// LoadBalancer is servicelb (K3s ServiceLB/Klipper) or k3d (k3d's proxy).
	LoadBalancer string `yaml:"loadBalancer" json:"loadBalancer" enum:"servicelb,k3d"`
}

// DNS lists the names that must resolve to the cluster.
type DNS struct {
	Domain  string      `yaml:"domain" json:"domain"`
	Records []DNSRecord `yaml:"records,omitempty" json:"records,omitempty"`
}

// DNSRecord is one name and the addresses it points to.
type DNSRecord struct {
	Name    string   `yaml:"name" json:"name"`
	Targets []string `yaml:"targets" json:"targets"`
}

// Certificates is cert-manager's ACME set-up that the GitOps repository
// expects; labctl only seeds its secret.
type Certificates struct {
	Issuer string `yaml:"issuer" json:"issuer"`
	// DNS01 is the challenge provider and its API token.
	DNS01 DNS01 `yaml:"dns01" json:"dns01"`
}

// DNS01 names the provider and where its API token is.
type DNS01 struct {
	Provider    string    `yaml:"provider" json:"provider"`
	APITokenRef SecretRef `yaml:"apiTokenRef" json:"apiTokenRef"`
	// SecretName and SecretNamespace are where the token is seeded.
	SecretName      string `yaml:"secretName" json:"secretName"`
	SecretNamespace string `yaml:"secretNamespace" json:"secretNamespace"`
}

// Flux is the GitOps bootstrap.
type Flux struct {
	URL    string `yaml:"url" json:"url"`
	Branch string `yaml:"branch" json:"branch"`
	// Path is clusters/<environment>.
	Path string `yaml:"path" json:"path"`
	// DeployKeyRef is an SSH private key with access to URL; without it
	// labctl generates one and prints its public half.
	DeployKeyRef *SecretRef `yaml:"deployKeyRef,omitempty" json:"deployKeyRef,omitempty"`
	// KnownHostsFile holds the git host's SSH key for an ssh:// URL
	// (default ~/.ssh/known_hosts); labctl and Flux both check it.
	KnownHostsFile string `yaml:"knownHostsFile,omitempty" json:"knownHostsFile,omitempty"`
	// TokenRef authenticates as Username (default "git") over HTTP(S), for
	// labctl's push and for Flux's GitRepository.
	TokenRef *SecretRef `yaml:"tokenRef,omitempty" json:"tokenRef,omitempty"`
	Username string     `yaml:"username,omitempty" json:"username,omitempty"`
	// SOPSAgeKeyRef is seeded as the sops-age secret for decryption.
	SOPSAgeKeyRef *SecretRef `yaml:"sopsAgeKeyRef,omitempty" json:"sopsAgeKeyRef,omitempty"`
	// Version is the Flux release installed in the cluster.
	Version string `yaml:"version,omitempty" json:"version,omitempty"`
	// Manifests is a local directory holding Flux's install kustomization
	// (air-gapped); empty means the release's manifests from GitHub.
	Manifests string `yaml:"manifests,omitempty" json:"manifests,omitempty"`
	// Components are the controllers installed.
	Components []string `yaml:"components,omitempty" json:"components,omitempty"`
	// Kustomizations is the reconciliation order the repository declares
	// through dependsOn; labctl waits for and reports them in this order.
	Kustomizations []FluxKustomization `yaml:"kustomizations" json:"kustomizations"`
}

// FluxKustomization is one Flux Kustomization of the repository.
type FluxKustomization struct {
	Name      string   `yaml:"name" json:"name"`
	Path      string   `yaml:"path" json:"path"`
	DependsOn []string `yaml:"dependsOn,omitempty" json:"dependsOn,omitempty"`
}

// Servers returns the nodes with the server role, in profile order.
func (s *Spec) Servers() []Node {
	var out []Node
	for _, n := range s.Nodes {
		if n.Role == RoleServer {
			out = append(out, n)
		}
	}
	return out
}

// Agents returns the nodes with the agent role, in profile order.
func (s *Spec) Agents() []Node {
	var out []Node
	for _, n := range s.Nodes {
		if n.Role == RoleAgent {
			out = append(out, n)
		}
	}
	return out
}

// DockerHostMachine is a k3d cluster's Docker host reached over SSH
// (spec.k3d.dockerHost ssh://[user@]host[:port]) as a machine labctl
// logs in to: named by its host, with the URL's user and port and the
// profile's identities, known_hosts and sudo password. ok is false for
// any other Docker (a local socket, tcp://, a context).
func (s *Spec) DockerHostMachine() (n Node, ssh SSH, ok bool) {
	if s.K3d == nil || !strings.HasPrefix(s.K3d.DockerHost, "ssh://") {
		return Node{}, SSH{}, false
	}
	u, err := url.Parse(s.K3d.DockerHost)
	if err != nil || u.Hostname() == "" {
		return Node{}, SSH{}, false
	}
	if s.SSH != nil {
		ssh = *s.SSH
	}
	// Docker's SSH helper logs in as the URL's user, on its port, and
	// straight to the host: so does labctl.
	ssh.User, ssh.Port, ssh.JumpHost = "", 0, ""
	if u.User != nil {
		ssh.User = u.User.Username()
	}
	if p, err := strconv.Atoi(u.Port()); err == nil {
		ssh.Port = p
	}
	return Node{Name: u.Hostname(), Address: u.Hostname(), Role: RoleDockerHost}, ssh, true
}

// Node returns the profile's node of that name.
func (s *Spec) Node(name string) (Node, bool) {
	for _, n := range s.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

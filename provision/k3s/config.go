// Package k3s renders what labctl puts on a node to install K3s — the
// /etc/rancher/k3s/config.yaml, the token file and the install command —
// and decides, from what it observed on the servers, which node may
// initialise a cluster and which server the others join.
//
// The cluster token is a file of its own (token-file), so config.yaml
// holds no secret and can be shown, diffed and pinned by golden files.
package k3s

import (
	"fmt"
	"maps"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/labctl/labctl/profiles"
)

// Paths on a node.
const (
	ConfigPath     = "/etc/rancher/k3s/config.yaml"
	TokenPath      = "/etc/rancher/k3s/cluster-token"
	KubeconfigPath = "/etc/rancher/k3s/k3s.yaml"
	// InstallScriptPath is where an air-gapped install puts the script.
	InstallScriptPath = "/usr/local/bin/k3s-install.sh"
	BinaryPath        = "/usr/local/bin/k3s"
	ImagesDir         = "/var/lib/rancher/k3s/agent/images"
)

// UninstallScript removes K3s with its own uninstall scripts (the server's
// or the agent's, whichever the install left) and any server data left
// behind by a failed install; the host's other packages stay. With etcd
// on a disk of its own (an fstab bind line for DBDir, written by labctl),
// the bind is undone first, as K3s's killall does, and the data on that
// disk is wiped too: a later install must not find the old database; the
// fstab line stays, like the other prerequisites.
const UninstallScript = `set -e
src=$(awk '$2 == "` + DBDir + `" && $3 == "none" { print $1 }' /etc/fstab 2>/dev/null)
if mountpoint -q ` + DBDir + ` 2>/dev/null; then
  systemctl stop k3s 2>/dev/null || true
  umount ` + DBDir + `
fi
for s in k3s-uninstall.sh k3s-agent-uninstall.sh; do
  if [ -x /usr/local/bin/$s ]; then /usr/local/bin/$s; fi
done
rm -rf ` + DBDir + `
if [ -n "$src" ] && [ -d "$src" ]; then find "$src" -mindepth 1 -delete; fi
if [ -x ` + BinaryPath + ` ] || [ -d /etc/rancher/k3s ]; then echo "K3s still present after its uninstall script" >&2; exit 1; fi`

// SupervisorPort is where servers serve the API and joining nodes connect.
const SupervisorPort = 6443

// Config is /etc/rancher/k3s/config.yaml. Field order is the file's order.
type Config struct {
	ClusterInit         bool     `yaml:"cluster-init,omitempty"`
	Server              string   `yaml:"server,omitempty"`
	TokenFile           string   `yaml:"token-file"`
	NodeName            string   `yaml:"node-name"`
	NodeIP              string   `yaml:"node-ip"`
	AdvertiseAddress    string   `yaml:"advertise-address,omitempty"`
	TLSSAN              []string `yaml:"tls-san,omitempty"`
	ClusterCIDR         string   `yaml:"cluster-cidr,omitempty"`
	ServiceCIDR         string   `yaml:"service-cidr,omitempty"`
	Disable             []string `yaml:"disable,omitempty"`
	WriteKubeconfigMode string   `yaml:"write-kubeconfig-mode,omitempty"`
	// Extra is the profile's passthrough (spec.k3s.config on servers,
	// agentConfig on agents), after labctl's keys, sorted.
	Extra map[string]any `yaml:",inline"`
}

// NodeConfig is the config of node n. join is the server it joins; nil
// makes n the node that initialises the cluster. Settings that must be
// identical on every server (CIDRs, disabled components, SANs) come from
// the profile, never from the node.
func NodeConfig(s *profiles.Spec, n profiles.Node, join *profiles.Node) Config {
	c := Config{TokenFile: TokenPath, NodeName: n.Name, NodeIP: n.Address}
	if join == nil {
		c.ClusterInit = true
	} else {
		c.Server = ServerURL(*join)
	}
	if n.Role == profiles.RoleServer {
		c.AdvertiseAddress = n.Address
		c.TLSSAN = tlsSANs(s)
		c.ClusterCIDR = s.K3s.ClusterCIDR
		c.ServiceCIDR = s.K3s.ServiceCIDR
		c.Disable = s.K3s.Disable
		c.WriteKubeconfigMode = "0600"
		c.Extra = s.K3s.Config
	} else {
		c.Extra = s.K3s.AgentConfig
	}
	return c
}

// ServerURL is how other nodes reach server n.
func ServerURL(n profiles.Node) string {
	return "https://" + net.JoinHostPort(n.Address, strconv.Itoa(SupervisorPort))
}

// tlsSANs are every server's address plus the profile's DNS names that
// point at the servers, so the API certificate is valid whichever a
// client uses.
func tlsSANs(s *profiles.Spec) []string {
	var sans []string
	servers := map[string]bool{}
	for _, m := range s.Servers() {
		sans = append(sans, m.Address)
		servers[m.Address] = true
	}
	for _, r := range s.DNS.Records {
		for _, t := range r.Targets {
			if servers[t] {
				sans = append(sans, r.Name)
				break
			}
		}
	}
	return sans
}

// Render is the file's text.
func (c Config) Render() []byte {
	b, err := yaml.Marshal(c)
	if err != nil {
		panic(err) // a fixed struct of strings always marshals
	}
	return append([]byte("# Written by labctl; changes are overwritten on the next run.\n"), b...)
}

// Summary is the config in one line, for plans and events.
func (c Config) Summary() string {
	var parts []string
	if c.ClusterInit {
		parts = append(parts, "cluster-init")
	}
	if c.Server != "" {
		parts = append(parts, "server "+c.Server)
	}
	parts = append(parts, "node-ip "+c.NodeIP)
	if len(c.TLSSAN) > 0 {
		parts = append(parts, "tls-san "+strings.Join(c.TLSSAN, ","))
	}
	if c.ClusterCIDR != "" {
		parts = append(parts, "cluster-cidr "+c.ClusterCIDR, "service-cidr "+c.ServiceCIDR)
	}
	if len(c.Disable) > 0 {
		parts = append(parts, "disable "+strings.Join(c.Disable, ","))
	}
	for _, k := range slices.Sorted(maps.Keys(c.Extra)) {
		parts = append(parts, k+" "+renderValue(c.Extra[k]))
	}
	return strings.Join(parts, "; ")
}

// Install is how K3s gets onto a node.
type Install struct {
	// Command runs as root on the node.
	Command string
	// Uploads are files to put on the node first (air-gapped installs):
	// local path → remote path and mode.
	Uploads []Upload
}

// Upload is one local file copied to the node.
type Upload struct {
	Local, Remote string
	Mode          uint32
}

// InstallFor renders the install of node n: the official script from
// spec.k3s.installScriptURL with the pinned version, or, air-gapped, the
// uploaded script with INSTALL_K3S_SKIP_DOWNLOAD. The config file and
// token file are read by K3s itself; no secret is on the command line.
func InstallFor(s *profiles.Spec, n profiles.Node) Install {
	exec := "server"
	if n.Role == profiles.RoleAgent {
		exec = "agent"
	}
	env := fmt.Sprintf("INSTALL_K3S_VERSION=%s INSTALL_K3S_EXEC=%s", shq(s.K3s.Version), exec)
	if ag := s.K3s.Airgap; ag != nil {
		in := Install{
			Command: fmt.Sprintf("INSTALL_K3S_SKIP_DOWNLOAD=true %s %s", env, InstallScriptPath),
			Uploads: []Upload{
				{Local: ag.Binary, Remote: BinaryPath, Mode: 0o755},
				{Local: ag.InstallScript, Remote: InstallScriptPath, Mode: 0o755},
			},
		}
		if ag.Images != "" {
			in.Uploads = append(in.Uploads, Upload{Local: ag.Images, Remote: path.Join(ImagesDir, path.Base(ag.Images)), Mode: 0o644})
		}
		return in
	}
	return Install{Command: fmt.Sprintf("curl -sfL %s | %s sh -s -", shq(s.K3s.InstallScriptURL), env)}
}

func shq(s string) string {
	plain := func(r rune) bool {
		return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("+-./:_=@", r)
	}
	if s != "" && strings.IndexFunc(s, func(r rune) bool { return !plain(r) }) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

package flow

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"

	"github.com/labctl/labctl/profiles"
)

// What plans say a change is: the words of every Wet call that are more
// than a line of code.

// kustomizationOrder renders the dependsOn chains: "a → b → c; d → e".
func kustomizationOrder(ks []profiles.FluxKustomization) string {
	children := map[string][]string{}
	var roots []string
	for _, k := range ks {
		if len(k.DependsOn) == 0 {
			roots = append(roots, k.Name)
		}
		for _, d := range k.DependsOn {
			children[d] = append(children[d], k.Name)
		}
	}
	var chains []string
	var walk func(name, prefix string)
	walk = func(name, prefix string) {
		chain := prefix + name
		if len(children[name]) == 0 {
			chains = append(chains, chain)
			return
		}
		for _, c := range children[name] {
			walk(c, chain+" → ")
		}
	}
	for _, r := range roots {
		walk(r, "")
	}
	return strings.Join(chains, "; ")
}

func vmRef(n profiles.Node) string {
	if n.VMID == 0 {
		return fmt.Sprintf("%q (next free id)", n.Name)
	}
	return fmt.Sprintf("%d %q", n.VMID, n.Name)
}

func cloneChange(s *profiles.Spec, n profiles.Node) string {
	px := s.Proxmox
	return fmt.Sprintf("full-clone template %q on Proxmox node %q to VM %s on storage %s", px.Template, px.Node, vmRef(n), px.Storage)
}

func configureChange(s *profiles.Spec, n profiles.Node) string {
	px := s.Proxmox
	bits := 24
	if pfx, err := netip.ParsePrefix(s.Network.Subnet); err == nil {
		bits = pfx.Bits()
	}
	ci := []string{"user " + s.SSH.User, fmt.Sprintf("ipconfig0 ip=%s/%d,gw=%s", n.Address, bits, s.Network.Gateway)}
	if len(s.Network.Nameservers) > 0 {
		ci = append(ci, "nameserver "+strings.Join(s.Network.Nameservers, " "))
	}
	if s.Network.SearchDomain != "" {
		ci = append(ci, "searchdomain "+s.Network.SearchDomain)
	}
	if len(px.SSHKeys) > 0 {
		ci = append(ci, "SSH keys from "+strings.Join(px.SSHKeys, ", "))
	}
	bridge := px.Bridge
	if bridge == "" {
		bridge = "vmbr0"
	}
	return fmt.Sprintf("configure VM %s\n%d cores, %d MiB memory, disk %d GiB, net0 on %s, QEMU guest agent on\ncloud-init: %s",
		vmRef(n), px.VM.Cores, px.VM.MemoryMiB, px.VM.DiskGiB, bridge, strings.Join(ci, ", "))
}

func k3dChange(s *profiles.Spec) string {
	k := s.K3d
	var ports []string
	for _, p := range k.Ports {
		ports = append(ports, fmt.Sprintf("%d:%d@%s", p.HostPort, p.ContainerPort, p.NodeFilter))
	}
	return fmt.Sprintf("create k3d cluster %q on %s: %d server + %d agents, image %s, ports %s, API %s:%d",
		k.ClusterName, dockerName(k), k.Servers, k.Agents, k.Image, strings.Join(ports, " "), k.APIHost, k.APIPort)
}

// dockerName is the Docker a k3d cluster runs on, in words.
func dockerName(k *profiles.K3d) string {
	switch {
	case k.DockerHost != "":
		return "Docker at " + k.DockerHost
	case k.DockerContext != "":
		return "Docker context " + k.DockerContext
	}
	return "the local Docker"
}

// dockerHostLabel names the machine a k3d cluster runs on.
func dockerHostLabel(k *profiles.K3d) string {
	dockerHost := k.DockerHost
	switch {
	case dockerHost == "" && k.DockerContext != "":
		return "context:" + k.DockerContext
	case dockerHost == "" || strings.HasPrefix(dockerHost, "unix://"):
		return "local-docker"
	}
	if u, err := url.Parse(dockerHost); err == nil && u.Hostname() != "" {
		return u.Hostname()
	}
	return dockerHost
}

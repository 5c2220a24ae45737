package k3s

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/labctl/labctl/profiles"
)

// ServerState is what labctl observed on one server before installing.
type ServerState struct {
	Node profiles.Node
	// Err is set when the server could not be asked.
	Err error
	// HasData: K3s server data exists (/var/lib/rancher/k3s/server/db).
	HasData bool
	// Active: the k3s service is running.
	Active bool
	// CAHash identifies the cluster the data belongs to (sha256 of its
	// server CA); empty without data.
	CAHash string
}

// Decision is where the cluster comes from and who joins it, in order.
type Decision struct {
	// Init is the server that runs cluster-init; nil when a cluster exists.
	Init *profiles.Node
	// Via is the server the others join.
	Via profiles.Node
	// Join lists the nodes still to join, in profile order.
	Join []profiles.Node
}

// Errors that stop a create before anything is installed.
var (
	ErrUnreachable  = errors.New("cannot decide on the cluster")
	ErrSplitCluster = errors.New("servers belong to different clusters")
	ErrClusterDown  = errors.New("cluster data exists but no server is running")
	ErrStaleServer  = errors.New("server has cluster data but is not running")
)

// Decide applies labctl's rule: a cluster is initialised only when no
// server has cluster data; otherwise every missing server joins a running
// one. It never initialises where members exist elsewhere, never merges
// two clusters, and never joins a node over its own stale data.
func Decide(servers []ServerState) (Decision, error) {
	if len(servers) == 0 {
		return Decision{}, fmt.Errorf("%w: no servers", ErrUnreachable)
	}
	var unreachable []string
	byCA := map[string][]string{}
	var running []profiles.Node
	var stale []string
	for _, s := range servers {
		switch {
		case s.Err != nil:
			unreachable = append(unreachable, fmt.Sprintf("%s (%v)", s.Node.Name, s.Err))
		case s.HasData && s.Active:
			byCA[s.CAHash] = append(byCA[s.CAHash], s.Node.Name)
			running = append(running, s.Node)
		case s.HasData:
			stale = append(stale, s.Node.Name)
		}
	}
	if len(unreachable) > 0 {
		return Decision{}, fmt.Errorf("%w: %s unreachable; labctl decides where a cluster starts only when every server answers", ErrUnreachable, strings.Join(unreachable, ", "))
	}
	if len(byCA) > 1 {
		var parts []string
		for ca, names := range byCA {
			parts = append(parts, fmt.Sprintf("%s (CA %s)", strings.Join(names, ", "), short(ca)))
		}
		sort.Strings(parts)
		return Decision{}, fmt.Errorf("%w: %s; labctl will not merge them: uninstall K3s on one side (k3s-uninstall.sh) and run again", ErrSplitCluster, strings.Join(parts, " vs "))
	}
	if len(running) == 0 && len(stale) > 0 {
		return Decision{}, fmt.Errorf("%w: %s; start k3s there (systemctl start k3s) or restore it; labctl will not initialise a new cluster over it", ErrClusterDown, strings.Join(stale, ", "))
	}
	if len(stale) > 0 {
		return Decision{}, fmt.Errorf("%w: %s; start k3s there, or uninstall K3s on it (k3s-uninstall.sh) so it can join afresh", ErrStaleServer, strings.Join(stale, ", "))
	}
	d := Decision{}
	if len(running) == 0 {
		first := servers[0].Node
		d.Init, d.Via = &first, first
	} else {
		d.Via = running[0]
	}
	for _, s := range servers {
		if s.Node.Name == d.Via.Name || (s.HasData && s.Active) {
			continue
		}
		d.Join = append(d.Join, s.Node)
	}
	return d, nil
}

func short(ca string) string {
	if len(ca) > 12 {
		return ca[:12]
	}
	return ca
}

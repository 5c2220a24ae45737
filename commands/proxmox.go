package commands

import (
	"fmt"
	"io"
	"os"

	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/proxmox"
)

// ProxmoxOptions are the flags of the commands that talk to Proxmox VE.
type ProxmoxOptions struct {
	// Insecure skips TLS verification of the API (with a warning).
	Insecure bool
	// ApplyDrift lets create change VMs whose config differs from the
	// profile (shown by `labctl plan --observe`).
	ApplyDrift bool
	// Lookup reads the environment; default os.LookupEnv.
	Lookup func(string) (string, bool)
}

// proxmoxBackend connects to the profile's Proxmox VE.
func proxmoxBackend(l *profiles.Loaded, o ProxmoxOptions, warn io.Writer) (*proxmox.Backend, error) {
	if o.Lookup == nil {
		o.Lookup = os.LookupEnv
	}
	c, err := proxmox.Connect(l.Spec.Proxmox, proxmox.ConnectOptions{Lookup: o.Lookup, Insecure: o.Insecure, Warn: warn})
	if err != nil {
		return nil, fmt.Errorf("profile %s: %w", l.Metadata.Name, err)
	}
	return &proxmox.Backend{Client: c, Spec: &l.Spec, Profile: l.Metadata.Name, ApplyDrift: o.ApplyDrift, Log: warn}, nil
}

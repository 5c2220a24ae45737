package commands

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

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

// destroyVMs purges the profile's VMs in parallel and reports each.
func destroyVMs(ctx context.Context, e Env, l *profiles.Loaded, b *proxmox.Backend) error {
	nodes := l.Spec.Nodes
	errs := make([]error, len(nodes))
	msgs := make([]string, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			existed, err := b.DestroyVM(ctx, n)
			switch {
			case err != nil:
				errs[i] = err
			case existed:
				msgs[i] = fmt.Sprintf("destroyed VM %q (purged with its disks)", n.Name)
			default:
				msgs[i] = fmt.Sprintf("no VM named %q", n.Name)
			}
		}()
	}
	wg.Wait()
	var failed []error
	for i := range nodes {
		if msgs[i] != "" {
			fmt.Fprintln(e.Stdout, msgs[i])
		}
		if errs[i] != nil {
			failed = append(failed, errs[i])
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("destroy %s: %d of %d VMs not destroyed: \n%w", l.Metadata.Name, len(failed), len(nodes), errors.Join(failed...))
	}
	return nil
}

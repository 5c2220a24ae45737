// Package nodes is the SSH-nodes backend of the create flow: it reaches a
// profile's nodes through one pooled SSH connection each and brings their
// host prerequisites in place (provision/prereq).
package nodes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/prereq"
	"github.com/labctl/labctl/provision/remote"
)

// Backend implements flow.Hosts for a profile's SSH nodes.
type Backend struct {
	Pool *remote.Pool
	SSH  *profiles.SSH
	// AcceptNewHostKeys records keys of hosts absent from known_hosts.
	AcceptNewHostKeys bool
	DataPath          string
	// WaitSSHTimeout bounds WaitSSH (default 5 minutes).
	WaitSSHTimeout time.Duration

	mu    sync.Mutex
	facts map[string]prereq.Facts // last observed, per node, for Apply's warnings
}

// Host returns the node's pooled connection.
func (b *Backend) Host(ctx context.Context, n profiles.Node) (*remote.Host, error) {
	cfg, err := remote.ConfigFor(b.SSH, n, b.AcceptNewHostKeys, os.LookupEnv)
	if err != nil {
		return nil, err
	}
	return b.Pool.Get(ctx, cfg)
}

// WaitSSH waits until the node accepts an SSH login (a VM booting).
func (b *Backend) WaitSSH(ctx context.Context, n profiles.Node) error {
	timeout := b.WaitSSHTimeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	delay := time.Second
	for {
		_, err := b.Host(ctx, n)
		if err == nil {
			return nil
		}
		// A host key problem does not go away by waiting. (A refused
		// login may: cloud-init can still be writing the user's keys.)
		if errors.Is(err, remote.ErrHostKeyUnknown) || errors.Is(err, remote.ErrHostKeyMismatch) {
			if errors.Is(err, remote.ErrHostKeyUnknown) && !b.AcceptNewHostKeys {
				return fmt.Errorf("%w (a new VM's key is made at its first boot: pass --accept-new-host-keys to record it)", err)
			}
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: no SSH login within %s: %w", n.Name, timeout, err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
}

// PrerequisiteFixes observes the node and returns what is missing, and
// the findings labctl cannot fix as warnings.
func (b *Backend) PrerequisiteFixes(ctx context.Context, n profiles.Node) ([]prereq.Fix, []string, error) {
	h, err := b.Host(ctx, n)
	if err != nil {
		return nil, nil, err
	}
	f, err := prereq.Gather(ctx, h, b.DataPath)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", n.Name, err)
	}
	var warnings []string
	for _, fd := range prereq.Assess(f, b.DataPath) {
		if fd.Status == prereq.Warn {
			warnings = append(warnings, fd.Item+": "+fd.Detail)
		}
	}
	b.mu.Lock()
	if b.facts == nil {
		b.facts = map[string]prereq.Facts{}
	}
	b.facts[n.Name] = f
	b.mu.Unlock()
	return prereq.Fixes(f, b.DataPath), warnings, nil
}

// ApplyPrerequisite makes one fix on the node as root.
func (b *Backend) ApplyPrerequisite(ctx context.Context, n profiles.Node, fix prereq.Fix) error {
	h, err := b.Host(ctx, n)
	if err != nil {
		return err
	}
	b.mu.Lock()
	f := b.facts[n.Name]
	b.mu.Unlock()
	return prereq.Apply(ctx, h, f, fix)
}

// Package nodes is the SSH-nodes backend of the create flow: it reaches a
// profile's nodes through one pooled SSH connection each and brings their
// host prerequisites in place (provision/prereq).
package nodes

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/labctl/labctl/facts"
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
	// ReplaceHostKeys names nodes whose machines were reinstalled: a
	// changed host key replaces their known_hosts lines.
	ReplaceHostKeys []string
	// Spec, when set, gives each node's prerequisites and tuning
	// (prereq.WantFor); without it, Longhorn's at DataPath.
	Spec     *profiles.Spec
	DataPath string
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
	cfg.ReplaceHostKey = slices.Contains(b.ReplaceHostKeys, n.Name)
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

// ObservePrerequisites reads the node and returns what is missing, and
// the findings labctl cannot fix as warnings.
func (b *Backend) ObservePrerequisites(ctx context.Context, n profiles.Node) (facts.Prerequisites, error) {
	h, err := b.Host(ctx, n)
	if err != nil {
		return facts.Prerequisites{}, err
	}
	f, err := prereq.Gather(ctx, runOn(h, nil), b.want(n))
	if err != nil {
		return facts.Prerequisites{}, fmt.Errorf("%s: %w", n.Name, err)
	}
	var out facts.Prerequisites
	for _, fd := range prereq.Assess(f, b.want(n)) {
		switch fd.Status {
		case prereq.Warn:
			out.Warnings = append(out.Warnings, fd.Item+": "+fd.Detail)
		case prereq.Refused:
			out.Refused = append(out.Refused, fd.Item+": "+fd.Detail)
		}
	}
	b.mu.Lock()
	if b.facts == nil {
		b.facts = map[string]prereq.Facts{}
	}
	b.facts[n.Name] = f
	b.mu.Unlock()
	out.Fixes = fixFacts(prereq.Fixes(f, b.want(n)))
	return out, nil
}

// AssumeFresh is what a machine not made yet lacks: everything.
func (b *Backend) AssumeFresh(n profiles.Node) facts.Prerequisites {
	return facts.Prerequisites{Fixes: fixFacts(prereq.Fixes(nil, b.want(n))), Assumed: true}
}

func fixFacts(fs []prereq.Fix) []facts.Fix {
	out := make([]facts.Fix, len(fs))
	for i, f := range fs {
		out[i] = facts.Fix{Item: f.Item, Desc: f.Desc}
	}
	return out
}

// ApplyPrerequisite makes one fix on the node as root, from the facts
// last observed there; a fix the kernel makes impossible is returned as
// a warning.
func (b *Backend) ApplyPrerequisite(ctx context.Context, n profiles.Node, fix facts.Fix) (string, error) {
	h, err := b.Host(ctx, n)
	if err != nil {
		return "", err
	}
	b.mu.Lock()
	f := b.facts[n.Name]
	b.mu.Unlock()
	for _, p := range prereq.Fixes(f, b.want(n)) {
		if p.Item != fix.Item {
			continue
		}
		err := prereq.Apply(ctx, runOn(h, lines(ctx)), f, p)
		var kw *prereq.KernelWarning
		if errors.As(err, &kw) {
			return kw.Error(), nil
		}
		return "", err
	}
	return "", fmt.Errorf("%s: no prerequisite fix %q (observed facts changed?)", n.Name, fix.Item)
}

// runOn is prereq's view of a host: a script in, its output out.
func runOn(h *remote.Host, output func(stream, line string)) prereq.Run {
	return func(ctx context.Context, script string, sudo bool) (string, error) {
		res, err := h.Run(ctx, remote.Cmd{Script: script, Sudo: sudo, Output: output})
		return res.Stdout, err
	}
}

// Gather reads node n's prerequisite facts (preflight).
func (b *Backend) Gather(ctx context.Context, n profiles.Node) (prereq.Facts, error) {
	h, err := b.Host(ctx, n)
	if err != nil {
		return nil, err
	}
	return prereq.Gather(ctx, runOn(h, nil), b.Want(n))
}

// Want is what node n must have.
func (b *Backend) Want(n profiles.Node) prereq.Want {
	if b.Spec != nil {
		return prereq.WantFor(b.Spec, n)
	}
	return prereq.Want{Longhorn: true, DataPath: b.DataPath}
}

func (b *Backend) want(n profiles.Node) prereq.Want { return b.Want(n) }

// ForgetHostKeys removes the nodes' lines from the profile's known_hosts
// (their machines are gone; new ones have new keys).
func (b *Backend) ForgetHostKeys(ns []profiles.Node) (int, error) {
	if b.SSH == nil || b.SSH.KnownHostsFile == "" {
		return 0, nil
	}
	file, err := profiles.ExpandHome(b.SSH.KnownHostsFile)
	if err != nil {
		return 0, err
	}
	return remote.ForgetHostKeys(file, b.hostPatterns(ns))
}

// KnownHostKeys lists the nodes' lines in the profile's known_hosts.
func (b *Backend) KnownHostKeys(ns []profiles.Node) ([]string, error) {
	if b.SSH == nil || b.SSH.KnownHostsFile == "" {
		return nil, nil
	}
	file, err := profiles.ExpandHome(b.SSH.KnownHostsFile)
	if err != nil {
		return nil, err
	}
	return remote.KnownHostsLines(file, b.hostPatterns(ns)...)
}

func (b *Backend) hostPatterns(ns []profiles.Node) []string {
	port := 22
	if b.SSH != nil && b.SSH.Port != 0 {
		port = b.SSH.Port
	}
	var hosts []string
	for _, n := range ns {
		hosts = append(hosts, knownhosts.Normalize(net.JoinHostPort(n.Address, strconv.Itoa(port))))
	}
	return hosts
}

package proxmox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	gp "github.com/luthermonson/go-proxmox"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/remote"
)

// Backend implements flow.VMs on one Proxmox VE node.
type Backend struct {
	Client  *Client
	Spec    *profiles.Spec
	Profile string
	// ApplyDrift lets ConfigureVM change a VM whose config differs from
	// the profile; without it such a VM is an ErrDrift.
	ApplyDrift bool
	// Poll is the task status interval; default 1 s.
	Poll time.Duration
	// AgentWait bounds the wait for the guest agent after a start;
	// default 3 min. A template without the agent only costs a warning.
	AgentWait time.Duration
	// Log receives warnings.
	Log io.Writer
	// Replaced names nodes whose VMs are new in this run although not
	// cloned by it (a rebuild resumed after its clone): their host keys
	// replace the stale known_hosts lines.
	Replaced []string

	mu      sync.Mutex
	cloneMu sync.Mutex // nextid and the clone request, one at a time
	keys    []string
	cloned  map[string]bool // VMs cloned in this run
}

// ErrDrift is returned when a VM exists with a config other than the
// profile's and ApplyDrift is not set.
var ErrDrift = errors.New("VM differs from the profile")

// Change is one config key that differs.
type Change = facts.Change

// State is what Proxmox has for a node's VM.
type State = facts.VM

func (b *Backend) node() string { return b.Spec.Proxmox.Node }

func (b *Backend) marker(n profiles.Node, configured bool) string {
	m := fmt.Sprintf("labctl: profile %s, node %s", b.Profile, n.Name)
	if !configured {
		m += " (cloned, not configured yet)"
	}
	return m
}

// api wraps errors with what labctl was doing and a hint for the common
// causes.
func (b *Backend) api(err error, format string, a ...any) error {
	if err == nil {
		return nil
	}
	what := fmt.Sprintf(format, a...)
	if gp.IsNotAuthorized(err) {
		return fmt.Errorf("%s: Proxmox API at %s refused token %s (401/403): check %s and the token's privileges", what, b.Client.Endpoint, b.Client.TokenID, EnvToken)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// resources lists the VMs and templates on every node.
func (b *Backend) resources(ctx context.Context) (gp.ClusterResources, error) {
	cl := (&gp.Cluster{}).New(b.Client.API)
	rs, err := cl.Resources(ctx, "vm")
	return rs, b.api(err, "list VMs on %s", b.Client.Endpoint)
}

// find returns the VM named name, if any; more than one is an error.
func find(rs gp.ClusterResources, name string, template bool) (*gp.ClusterResource, error) {
	var found []*gp.ClusterResource
	for _, r := range rs {
		if r.Name == name && (r.Template == 1) == template {
			found = append(found, r)
		}
	}
	switch len(found) {
	case 0:
		return nil, nil
	case 1:
		return found[0], nil
	}
	ids := make([]string, len(found))
	for i, r := range found {
		ids[i] = fmt.Sprintf("%d on %s", r.VMID, r.Node)
	}
	return nil, fmt.Errorf("%d VMs are named %q (%s): labctl finds VMs by name; rename or remove the extra ones", len(found), name, strings.Join(ids, ", "))
}

func (b *Backend) rawConfig(ctx context.Context, id int) (map[string]string, error) {
	var raw map[string]any
	if err := b.Client.API.Get(ctx, fmt.Sprintf("/nodes/%s/qemu/%d/config", b.node(), id), &raw); err != nil {
		return nil, b.api(err, "read config of VM %d", id)
	}
	out := map[string]string{}
	for k, v := range raw {
		switch x := v.(type) {
		case string:
			out[k] = x
		case float64:
			out[k] = strconv.FormatFloat(x, 'f', -1, 64)
		case nil:
		default:
			out[k] = fmt.Sprint(x)
		}
	}
	return out, nil
}

// ObserveVM reads the node's VM: found by name, checked against the
// VMID the profile gives, compared with the planned config.
func (b *Backend) ObserveVM(ctx context.Context, n profiles.Node) (State, error) {
	rs, err := b.resources(ctx)
	if err != nil {
		return State{}, err
	}
	o, err := b.observe(ctx, n, rs)
	return o.State, err
}

// observed is a VM's State with the config it was derived from and the
// planned one, for the steps that go on to change the VM.
type observed struct {
	State
	conf map[string]string
	want wanted
}

// observe is ObserveVM on an already read resource list.
func (b *Backend) observe(ctx context.Context, n profiles.Node, rs gp.ClusterResources) (observed, error) {
	var none observed
	r, err := find(rs, n.Name, false)
	if err != nil {
		return none, err
	}
	if r == nil {
		if n.VMID != 0 {
			for _, o := range rs {
				if int(o.VMID) == n.VMID {
					return none, fmt.Errorf("node %s: VMID %d is taken by %q on %s; pick another vmid or remove it", n.Name, n.VMID, o.Name, o.Node)
				}
			}
		}
		return none, nil
	}
	if r.Node != b.node() {
		return none, fmt.Errorf("node %s: VM %d %q is on Proxmox node %s; the profile says %s", n.Name, r.VMID, n.Name, r.Node, b.node())
	}
	if n.VMID != 0 && int(r.VMID) != n.VMID {
		return none, fmt.Errorf("node %s: VM %q has VMID %d; the profile says %d (labctl does not renumber VMs)", n.Name, n.Name, r.VMID, n.VMID)
	}
	conf, err := b.rawConfig(ctx, int(r.VMID))
	if err != nil {
		return none, err
	}
	var status gp.VirtualMachine
	if err := b.Client.API.Get(ctx, fmt.Sprintf("/nodes/%s/qemu/%d/status/current", b.node(), r.VMID), &status); err != nil {
		return none, b.api(err, "read status of VM %d", r.VMID)
	}
	st := State{Exists: true, VMID: int(r.VMID), Running: status.Status == gp.StatusVirtualMachineRunning, Lock: conf["lock"]}
	desc := strings.TrimSpace(conf["description"])
	st.Managed = strings.HasPrefix(desc, b.marker(n, true))
	st.Configured = desc == b.marker(n, true)
	want, err := b.want(n)
	if err != nil {
		return none, err
	}
	st.Drift, st.Notes = diff(conf, want)
	return observed{State: st, conf: conf, want: want}, nil
}

// Problem says why a VM cannot be used as it is, if it cannot.
func Problem(s State, n profiles.Node, node string) error { return s.Problem(n.Name, node) }

// wanted is the planned config: keys labctl sets, and the boot disk size.
type wanted struct {
	conf    map[string]string
	diskGiB int
	bridge  string
}

func (b *Backend) want(n profiles.Node) (wanted, error) {
	s := b.Spec
	px := s.Proxmox
	keys, err := b.sshKeys()
	if err != nil {
		return wanted{}, err
	}
	bits := 24
	if p, err := netip.ParsePrefix(s.Network.Subnet); err == nil {
		bits = p.Bits()
	}
	c := map[string]string{
		"cores":       strconv.Itoa(px.VM.Cores),
		"memory":      strconv.Itoa(px.VM.MemoryMiB),
		"agent":       "1",
		"ciuser":      s.SSH.User,
		"ipconfig0":   fmt.Sprintf("ip=%s/%d,gw=%s", n.Address, bits, s.Network.Gateway),
		"description": b.marker(n, true),
	}
	if len(keys) > 0 {
		c["sshkeys"] = gp.EncodeSSHKeys(keys...)
	}
	if len(s.Network.Nameservers) > 0 {
		c["nameserver"] = strings.Join(s.Network.Nameservers, " ")
	}
	if s.Network.SearchDomain != "" {
		c["searchdomain"] = s.Network.SearchDomain
	}
	bridge := px.Bridge
	if bridge == "" {
		bridge = "vmbr0"
	}
	return wanted{conf: c, diskGiB: px.VM.DiskGiB, bridge: bridge}, nil
}

// sshKeys reads the public keys cloud-init installs, once.
func (b *Backend) sshKeys() ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.keys != nil {
		return b.keys, nil
	}
	keys := []string{}
	for i, f := range b.Spec.Proxmox.SSHKeys {
		p, err := profiles.ExpandHome(f)
		if err != nil {
			return nil, err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("proxmox.sshKeys[%d]: %w", i, err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				keys = append(keys, line)
			}
		}
	}
	b.keys = keys
	return keys, nil
}

var reDiskSize = regexp.MustCompile(`(?:^|,)size=(\d+)([KMGT]?)(?:,|$)`)

// bootDisk returns the first disk key and its size in GiB.
func bootDisk(conf map[string]string) (string, int, bool) {
	for _, k := range []string{"scsi0", "virtio0", "sata0", "ide0"} {
		d := conf[k]
		if d == "" || strings.Contains(d, "media=cdrom") {
			continue
		}
		m := reDiskSize.FindStringSubmatch(d)
		if m == nil {
			continue
		}
		n, _ := strconv.ParseInt(m[1], 10, 64)
		n <<= map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m[2]]
		return k, int(n >> 30), true
	}
	return "", 0, false
}

func bridgeOf(net0 string) string {
	for _, p := range strings.Split(net0, ",") {
		if v, ok := strings.CutPrefix(p, "bridge="); ok {
			return v
		}
	}
	return ""
}

// withBridge keeps net0's model and MAC address, changing the bridge.
func withBridge(net0, bridge string) string {
	if net0 == "" {
		return "virtio,bridge=" + bridge
	}
	parts := strings.Split(net0, ",")
	out := []string{parts[0], "bridge=" + bridge}
	for _, p := range parts[1:] {
		if !strings.HasPrefix(p, "bridge=") {
			out = append(out, p)
		}
	}
	return strings.Join(out, ",")
}

func diff(have map[string]string, w wanted) ([]Change, []string) {
	var out []Change
	var notes []string
	keys := make([]string, 0, len(w.conf))
	for k := range w.conf {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		want, got := w.conf[k], have[k]
		switch k {
		case "sshkeys":
			if !sameKeys(got, want) {
				out = append(out, Change{Key: k, Have: keyCount(got), Want: keyCount(want)})
			}
			continue
		case "agent":
			if strings.HasPrefix(got, "1") || strings.HasPrefix(got, "enabled=1") {
				continue
			}
		case "description":
			continue // the marker: Managed/Configured, not drift
		}
		if got != want {
			out = append(out, Change{Key: k, Have: got, Want: want})
		}
	}
	if got := bridgeOf(have["net0"]); got != w.bridge {
		out = append(out, Change{Key: "net0 bridge", Have: got, Want: w.bridge})
	}
	if _, size, ok := bootDisk(have); ok {
		switch {
		case size < w.diskGiB:
			out = append(out, Change{Key: "disk", Have: fmt.Sprintf("%dG", size), Want: fmt.Sprintf("%dG", w.diskGiB)})
		case size > w.diskGiB:
			notes = append(notes, fmt.Sprintf("disk is %dG, more than the profile's %dG: left as is (disks do not shrink)", size, w.diskGiB))
		}
	}
	return out, notes
}

func decodeKeys(enc string) []string {
	dec, err := url.PathUnescape(enc)
	if err != nil {
		dec = enc
	}
	var keys []string
	for _, k := range strings.Split(dec, "\n") {
		if f := strings.Fields(k); len(f) >= 2 {
			keys = append(keys, f[0]+" "+f[1]) // type and key, not the comment
		}
	}
	sort.Strings(keys)
	return keys
}

func sameKeys(a, b string) bool {
	return strings.Join(decodeKeys(a), "\n") == strings.Join(decodeKeys(b), "\n")
}

func keyCount(enc string) string {
	n := len(decodeKeys(enc))
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("%d key(s)", n)
}

// wait polls a task until it stops and checks its exit status: go-proxmox's
// Task.Wait returns nil for a failed task too.
func (b *Backend) wait(ctx context.Context, t *gp.Task, what string) error {
	if t == nil {
		return fmt.Errorf("%s: Proxmox returned no task", what)
	}
	poll := b.Poll
	if poll == 0 {
		poll = time.Second
	}
	for {
		if err := t.Ping(ctx); err != nil {
			return b.api(err, "%s: task %s", what, t.UPID)
		}
		if t.IsCompleted {
			switch {
			case t.ExitStatus == "OK":
				return nil
			case strings.HasPrefix(t.ExitStatus, "WARNINGS"):
				b.warn("%s: task %s ended with %s", what, t.UPID, t.ExitStatus)
				return nil
			}
			return fmt.Errorf("%s: task %s failed: %s", what, t.UPID, t.ExitStatus)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (task %s still runs on Proxmox)", what, ctx.Err(), t.UPID)
		case <-time.After(poll):
		}
	}
}

func (b *Backend) warn(format string, a ...any) {
	if b.Log != nil {
		fmt.Fprintf(b.Log, "warning: "+format+"\n", a...)
	}
}

// run starts a task (retried while another task holds the VM's config
// lock) and waits for it, checking its exit status; what names it in
// errors.
func (b *Backend) run(ctx context.Context, what string, start func() (*gp.Task, error)) error {
	var t *gp.Task
	err := b.retryLocked(ctx, func() error {
		var err error
		t, err = start()
		return err
	})
	if err != nil {
		return b.api(err, "%s", what)
	}
	return b.wait(ctx, t, what)
}

// retryLocked retries an API call that met another task's config lock.
func (b *Backend) retryLocked(ctx context.Context, fn func() error) error {
	var err error
	for attempt := 1; attempt <= 4; attempt++ {
		if err = fn(); err == nil || !strings.Contains(err.Error(), "can't lock file") {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt) * max(b.Poll, 100*time.Millisecond)):
		}
	}
	return err
}

func (b *Backend) vm(id int) *gp.VirtualMachine {
	v := &gp.VirtualMachine{}
	v.New(b.Client.API, b.node(), id)
	return v
}

// CloneVM full-clones the template to the node's VM. A VM that exists is
// adopted (cloned by an earlier, interrupted run); one locked by a failed
// clone is an error that says how to clear it.
func (b *Backend) CloneVM(ctx context.Context, n profiles.Node) error {
	rs, err := b.resources(ctx)
	if err != nil {
		return err
	}
	st, err := b.observe(ctx, n, rs)
	if err != nil {
		return err
	}
	if err := Problem(st.State, n, b.node()); err != nil {
		return err
	}
	if st.Exists {
		return nil
	}
	px := b.Spec.Proxmox
	tpl, err := find(rs, px.Template, true)
	if err != nil {
		return err
	}
	if tpl == nil || tpl.Node != px.Node {
		var names []string
		for _, r := range rs {
			if r.Template == 1 && r.Node == px.Node {
				names = append(names, r.Name)
			}
		}
		return fmt.Errorf("proxmox.template: no template %q on node %s (templates there: %s)", px.Template, px.Node, orNone(names))
	}
	opts := &gp.VirtualMachineCloneOptions{NewID: n.VMID, Full: true, Name: n.Name, Storage: px.Storage, Target: px.Node, Description: b.marker(n, false)}
	// nextid and the clone request go one at a time within this run;
	// another client can still take the id in between (PVE answers
	// "already exists"): then a fresh id is asked for.
	b.cloneMu.Lock()
	var task *gp.Task
	for attempt := 1; ; attempt++ {
		if n.VMID == 0 {
			cl := (&gp.Cluster{}).New(b.Client.API)
			id, err := cl.NextID(ctx)
			if err != nil {
				b.cloneMu.Unlock()
				return b.api(err, "node %s: next free VMID", n.Name)
			}
			opts.NewID = id
		}
		err = b.retryLocked(ctx, func() error {
			var err error
			_, task, err = b.vm(int(tpl.VMID)).Clone(ctx, opts)
			return err
		})
		if err == nil || n.VMID != 0 || attempt == 3 || !strings.Contains(err.Error(), "already exists") {
			break
		}
	}
	b.cloneMu.Unlock()
	if err != nil {
		return b.api(err, "node %s: clone template %d to VM %d", n.Name, tpl.VMID, opts.NewID)
	}
	if err := b.wait(ctx, task, fmt.Sprintf("node %s: clone template %d to VM %d", n.Name, tpl.VMID, opts.NewID)); err != nil {
		after, oerr := b.ObserveVM(ctx, n)
		switch {
		case oerr != nil:
			return fmt.Errorf("%w; then: %w", err, oerr)
		case after.Exists:
			if perr := Problem(after, n, b.node()); perr != nil {
				return fmt.Errorf("%w\n%w", err, perr)
			}
			return fmt.Errorf("%w (VM %d is left; a re-run adopts it)", err, after.VMID)
		}
		return fmt.Errorf("%w (Proxmox removed the half-made VM %d; a re-run clones again)", err, opts.NewID)
	}
	b.mu.Lock()
	if b.cloned == nil {
		b.cloned = map[string]bool{}
	}
	b.cloned[n.Name] = true
	b.mu.Unlock()
	return nil
}

func orNone(xs []string) string {
	if len(xs) == 0 {
		return "none"
	}
	return strings.Join(xs, ", ")
}

// ConfigureVM sets the VM's size, guest agent and cloud-init, and grows
// its disk. A VM labctl has not finished configuring gets the whole
// config; a configured one that drifted is changed only with ApplyDrift.
func (b *Backend) ConfigureVM(ctx context.Context, n profiles.Node) error {
	rs, err := b.resources(ctx)
	if err != nil {
		return err
	}
	st, err := b.observe(ctx, n, rs)
	if err != nil {
		return err
	}
	if !st.Exists {
		return fmt.Errorf("node %s: no VM named %q to configure", n.Name, n.Name)
	}
	if err := Problem(st.State, n, b.node()); err != nil {
		return err
	}
	if st.Configured && len(st.Drift) == 0 {
		return nil
	}
	if st.Configured && !b.ApplyDrift {
		return fmt.Errorf("node %s: VM %d: %w: %s; re-run with --apply-drift to change it", n.Name, st.VMID, ErrDrift, facts.Changes(st.Drift))
	}
	if !st.Managed && !b.ApplyDrift {
		return fmt.Errorf("node %s: VM %d %q was not created by labctl (its description lacks %q); re-run with --apply-drift to take it over: %s", n.Name, st.VMID, n.Name, b.marker(n, true), facts.Changes(st.Drift))
	}
	w, conf := st.want, st.conf
	v := b.vm(st.VMID)
	if disk, size, ok := bootDisk(conf); ok && size < w.diskGiB {
		if err := b.run(ctx, fmt.Sprintf("node %s: grow %s of VM %d to %dG", n.Name, disk, st.VMID, w.diskGiB), func() (*gp.Task, error) {
			return v.ResizeDisk(ctx, disk, fmt.Sprintf("%dG", w.diskGiB))
		}); err != nil {
			return err
		}
	}
	var opts []gp.VirtualMachineOption
	keys := make([]string, 0, len(w.conf))
	for k := range w.conf {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "description" {
			continue // last, below: it marks the configure as finished
		}
		opts = append(opts, gp.VirtualMachineOption{Name: k, Value: w.conf[k]})
	}
	if bridgeOf(conf["net0"]) != w.bridge {
		opts = append(opts, gp.VirtualMachineOption{Name: "net0", Value: withBridge(conf["net0"], w.bridge)})
	}
	opts = append(opts, gp.VirtualMachineOption{Name: "description", Value: w.conf["description"]})
	if err := b.run(ctx, fmt.Sprintf("node %s: configure VM %d", n.Name, st.VMID), func() (*gp.Task, error) { return v.Config(ctx, opts...) }); err != nil {
		return err
	}
	if st.Running && st.Configured {
		b.warn("node %s: VM %d runs; Proxmox applies some of the changes (%s) at its next restart, which labctl does not do", n.Name, st.VMID, facts.Changes(st.Drift))
	}
	return nil
}

// StartVM starts the VM if it is stopped, then waits for the guest agent
// to report the planned address (a warning if the agent never answers).
func (b *Backend) StartVM(ctx context.Context, n profiles.Node) error {
	st, err := b.ObserveVM(ctx, n)
	if err != nil {
		return err
	}
	if !st.Exists {
		return fmt.Errorf("node %s: no VM named %q to start", n.Name, n.Name)
	}
	v := b.vm(st.VMID)
	if !st.Running {
		if err := b.run(ctx, fmt.Sprintf("node %s: start VM %d", n.Name, st.VMID), func() (*gp.Task, error) { return v.Start(ctx) }); err != nil {
			return err
		}
	}
	return b.waitAgent(ctx, n, v)
}

func (b *Backend) waitAgent(ctx context.Context, n profiles.Node, v *gp.VirtualMachine) error {
	limit := b.AgentWait
	if limit == 0 {
		limit = 3 * time.Minute
	}
	deadline := time.Now().Add(limit)
	poll := max(b.Poll, 100*time.Millisecond)
	for {
		ifaces, err := v.AgentGetNetworkIFaces(ctx)
		if err == nil {
			var seen []string
			for _, i := range ifaces {
				for _, a := range i.IPAddresses {
					if a.IPAddress == n.Address {
						return b.learnHostKey(ctx, n, v, deadline)
					}
					if a.IPAddressType == "ipv4" {
						seen = append(seen, a.IPAddress)
					}
				}
			}
			return fmt.Errorf("node %s: VM %d came up with %s, not the planned %s: check the template's cloud-init and proxmox.bridge", n.Name, v.VMID, orNone(seen), n.Address)
		}
		if !strings.Contains(err.Error(), "guest agent is not running") && !strings.Contains(err.Error(), "is not running") {
			return b.api(err, "node %s: ask the guest agent of VM %d for its addresses", n.Name, v.VMID)
		}
		if time.Now().After(deadline) {
			b.warn("node %s: the QEMU guest agent of VM %d did not answer within %s (is qemu-guest-agent in the template?); going on with SSH only", n.Name, v.VMID, limit)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}

// HostKeyFile is where a VM's SSH host key is read through the guest
// agent.
const HostKeyFile = "/etc/ssh/ssh_host_ed25519_key.pub"

// learnHostKey reads the VM's SSH host key through the guest agent (an
// authenticated, TLS-verified channel, unlike a first SSH connection)
// and records it in ssh.knownHostsFile, so a new VM needs no
// --accept-new-host-keys. A different key already recorded for the
// address is replaced only for a VM cloned in this run (the old line was
// its predecessor's); otherwise it is reported. A key that cannot be read
// before the deadline costs a warning.
func (b *Backend) learnHostKey(ctx context.Context, n profiles.Node, v *gp.VirtualMachine, deadline time.Time) error {
	s := b.Spec.SSH
	if s == nil || s.KnownHostsFile == "" {
		return nil
	}
	poll := max(b.Poll, 100*time.Millisecond)
	for {
		f, err := v.AgentFileRead(ctx, HostKeyFile)
		if err == nil {
			key, _, _, _, perr := ssh.ParseAuthorizedKey([]byte(f.Content))
			if perr != nil {
				return fmt.Errorf("node %s: %s of VM %d, read through the guest agent: %w", n.Name, HostKeyFile, v.VMID, perr)
			}
			host := knownhosts.Normalize(net.JoinHostPort(n.Address, strconv.Itoa(max(s.Port, 22))))
			b.mu.Lock()
			fresh := b.cloned[n.Name] || slices.Contains(b.Replaced, n.Name)
			b.mu.Unlock()
			changed, err := remote.RecordHostKey(s.KnownHostsFile, host, key, fresh)
			if err != nil {
				return fmt.Errorf("node %s: VM %d: %w", n.Name, v.VMID, err)
			}
			if changed && b.Log != nil {
				fmt.Fprintf(b.Log, "node %s: recorded host key %s %s, read through the guest agent, in %s\n", n.Name, key.Type(), ssh.FingerprintSHA256(key), s.KnownHostsFile)
			}
			return nil
		}
		if time.Now().After(deadline) {
			b.warn("node %s: could not read %s through the guest agent of VM %d (%v): its host key must be accepted on first SSH (--accept-new-host-keys)", n.Name, HostKeyFile, v.VMID, err)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}

// DestroyVM stops and purges the node's VM. It reports whether there was
// one; a VM without labctl's marker is refused.
func (b *Backend) DestroyVM(ctx context.Context, n profiles.Node) (bool, error) {
	st, err := b.ObserveVM(ctx, n)
	if err != nil || !st.Exists {
		return false, err
	}
	if !st.Managed {
		return false, fmt.Errorf("node %s: VM %d %q was not created by labctl for profile %s: not destroying it", n.Name, st.VMID, n.Name, b.Profile)
	}
	if err := Problem(st, n, b.node()); err != nil {
		return false, err
	}
	v := b.vm(st.VMID)
	if st.Running {
		if err := b.run(ctx, fmt.Sprintf("node %s: stop VM %d", n.Name, st.VMID), func() (*gp.Task, error) { return v.Stop(ctx) }); err != nil {
			return false, err
		}
	}
	return true, b.run(ctx, fmt.Sprintf("node %s: destroy VM %d", n.Name, st.VMID), func() (*gp.Task, error) {
		return v.Delete(ctx, &gp.VirtualMachineDeleteOptions{Purge: true, DestroyUnreferencedDisks: true})
	})
}

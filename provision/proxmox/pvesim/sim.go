// Package pvesim is a stateful Proxmox VE API simulator for tests: an
// httptest TLS server answering exactly the endpoints labctl's Proxmox
// provider uses, with PVE's shapes and quirks.
//
// Modelled:
//   - the /api2/json prefix and the {"data": …} envelope; parameter errors
//     as 400 {"errors": {param: msg}}; other failures as 500 with the
//     message in the HTTP status line, as pveproxy sends them ("500
//     Configuration file 'nodes/pve/qemu-server/101.conf' does not exist");
//   - API-token auth (Authorization: PVEAPIToken=user@realm!id=secret),
//     401 otherwise;
//   - numbers and strings as PVE types them (nextid is a string, cores a
//     number, agent a string);
//   - VM ids, names (DNS-name format), templates, the per-VM config lock
//     ("can't lock file '/var/lock/qemu-server/lock-101.conf' - got
//     timeout" after LockWait), the VM lock a clone holds ("VM is locked
//     (clone)");
//   - tasks with UPIDs (UPID:node:pid:pstart:starttime:type:id:user:),
//     status running → stopped and an exitstatus that is "OK" or the error;
//   - full clones (the new VM's config is written first, locked "clone";
//     the lock goes when the task ends; a failing clone removes the new VM
//     unless its cleanup fails too, which leaves it locked);
//   - async config updates with schema checks for the keys labctl sets
//     (sshkeys must be percent-encoded, ipconfig0 ip=CIDR,gw=IP), disk
//     resize (grow only), start, stop, destroy with purge (running VMs
//     and skiplock by a token refused);
//   - the guest agent: "QEMU guest agent is not running" until the VM's
//     Start hook has returned, then network-get-interfaces reports the
//     address from ipconfig0 and file-read answers through the ReadFile
//     hook;
//   - per-operation latency (API calls and task durations) and injected
//     failures (a failing clone task, with or without cleanup; 401; a lock
//     timeout; another client taking the id nextid just gave).
//
// Not modelled: clusters of several nodes and migration, storages' real
// capacity and content, linked clones, snapshots, pending changes (a
// config change to a running VM applies at once here; PVE keeps some as
// pending until a restart), sessions/tickets and CSRF, permissions other
// than skiplock, the ISO cloud-init drive, anything not listed above.
package pvesim

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Prefix is where PVE serves its API.
const Prefix = "/api2/json"

// Latency is how long operations take.
type Latency struct {
	// API is added to every request.
	API time.Duration
	// Clone, Config, Resize, Start, Stop and Destroy are task durations.
	Clone, Config, Resize, Start, Stop, Destroy time.Duration
}

// Hooks let a test back VMs with something real (the e2e starts a node
// container when a VM starts). An error from Start fails the start task.
type Hooks struct {
	Start   func(ctx context.Context, vm VM) error
	Stop    func(ctx context.Context, vm VM) error
	Destroy func(ctx context.Context, vm VM) error
	// ReadFile answers the guest agent's file-read (the e2e reads the
	// node container's file); without it every file is missing.
	ReadFile func(ctx context.Context, vm VM, path string) ([]byte, error)
}

// Options configure a simulator.
type Options struct {
	// Node is the PVE node's name; default "pve".
	Node string
	// Tokens maps token ids ("user@realm!name") to their secrets.
	Tokens map[string]string
	// Storages that exist; default local-lvm and local.
	Storages []string
	Latency  Latency
	// LockWait is how long an operation waits for a VM's config lock
	// before "got timeout"; default 10 s as in PVE.
	LockWait time.Duration
	Hooks    Hooks
}

// FailureMode is an injected failure.
type FailureMode int

const (
	// CloneFails makes the next clone task fail; PVE removes the new VM.
	CloneFails FailureMode = iota + 1
	// CloneFailsLocked makes the next clone task fail and its cleanup
	// too: the new VM stays, locked "clone".
	CloneFailsLocked
	// Unauthorized answers the next request with 401.
	Unauthorized
	// LockTimeout answers the next VM-mutating request with "can't lock
	// file … got timeout".
	LockTimeout
	// NextIDRace lets another client create a VM with the id the next
	// /cluster/nextid answers, right after it answered.
	NextIDRace
)

// VM is a snapshot of a simulated VM.
type VM struct {
	VMID     int
	Name     string
	Node     string
	Template bool
	Status   string // running or stopped
	Lock     string
	Config   map[string]string
	// From cloud-init, decoded: the user, SSH keys and ipconfig0 address.
	CIUser  string
	SSHKeys []string
	Address netip.Prefix
	Gateway string
}

type vm struct {
	vmid       int
	conf       map[string]string
	status     string
	agentReady bool
	lock       chan struct{} // the config lock (flock in PVE)
	startedAt  time.Time
}

type task struct {
	upid   string
	typ    string
	id     string
	user   string
	start  time.Time
	end    time.Time
	pid    int
	done   bool
	status string // exitstatus when done
}

// Sim is the simulator.
type Sim struct {
	*httptest.Server
	o Options

	mu       sync.Mutex
	vms      map[int]*vm
	tasks    map[string]*task
	failures []FailureMode
	requests []string
	pid      int
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// New starts a simulator on a loopback TLS listener.
func New(o Options) *Sim {
	if o.Node == "" {
		o.Node = "pve"
	}
	if len(o.Storages) == 0 {
		o.Storages = []string{"local-lvm", "local"}
	}
	if o.LockWait == 0 {
		o.LockWait = 10 * time.Second
	}
	s := &Sim{o: o, vms: map[int]*vm{}, tasks: map[string]*task{}, pid: 0x1f00}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // clients that refuse the certificate are expected
	s.StartTLS()
	return s
}

// Close stops the server and waits for running tasks.
func (s *Sim) Close() {
	s.cancel()
	s.Server.Close()
	s.wg.Wait()
}

// Endpoint is the API base URL (https://127.0.0.1:port/api2/json).
func (s *Sim) Endpoint() string { return s.URL + Prefix }

// AddTemplate adds a VM template with the given config (name is set).
func (s *Sim) AddTemplate(vmid int, name string, conf map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := map[string]string{"name": name, "template": "1"}
	for k, v := range conf {
		c[k] = v
	}
	s.vms[vmid] = &vm{vmid: vmid, conf: c, status: "stopped", lock: make(chan struct{}, 1)}
}

// Fail queues an injected failure for the next matching operation.
func (s *Sim) Fail(m FailureMode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, m)
}

// SetConfig changes a VM's config as an operator would in the web UI.
func (s *Sim) SetConfig(vmid int, key, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.vms[vmid]; v != nil {
		v.conf[key] = value
	}
}

// Unlock is the operator's `qm unlock VMID`.
func (s *Sim) Unlock(vmid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.vms[vmid]; v != nil {
		delete(v.conf, "lock")
	}
}

// Requests returns "METHOD path" of every request so far.
func (s *Sim) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// VMs returns the VMs that are not templates, by VMID.
func (s *Sim) VMs() []VM {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []VM
	for _, v := range s.vms {
		if v.conf["template"] == "1" {
			continue
		}
		out = append(out, s.snapshot(v))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VMID < out[j].VMID })
	return out
}

func (s *Sim) snapshot(v *vm) VM {
	c := map[string]string{}
	for k, val := range v.conf {
		c[k] = val
	}
	out := VM{VMID: v.vmid, Name: c["name"], Node: s.o.Node, Template: c["template"] == "1", Status: v.status, Lock: c["lock"], Config: c, CIUser: c["ciuser"]}
	if keys, err := url.PathUnescape(c["sshkeys"]); err == nil && keys != "" {
		for _, k := range strings.Split(keys, "\n") {
			if strings.TrimSpace(k) != "" {
				out.SSHKeys = append(out.SSHKeys, k)
			}
		}
	}
	if ip, gw, err := parseIPConfig(c["ipconfig0"]); err == nil {
		out.Address, out.Gateway = ip, gw
	}
	return out
}

// apiError is a PVE failure: 400 with per-parameter errors, or another
// status with the message as the status line's reason.
type apiError struct {
	code   int
	msg    string
	params map[string]string
}

func (e *apiError) Error() string { return e.msg }

func fail(code int, format string, a ...any) *apiError {
	return &apiError{code: code, msg: fmt.Sprintf(format, a...)}
}

func badParam(name, format string, a ...any) *apiError {
	return &apiError{code: 400, msg: "Parameter verification failed.", params: map[string]string{name: fmt.Sprintf(format, a...)}}
}

var (
	reVM     = regexp.MustCompile(`^/nodes/([^/]+)/qemu/(\d+)(/.*)?$`)
	reTask   = regexp.MustCompile(`^/nodes/([^/]+)/tasks/([^/]+)/status$`)
	reStatus = regexp.MustCompile(`^/nodes/([^/]+)/status$`)
)

func (s *Sim) serve(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, Prefix)
	s.mu.Lock()
	s.requests = append(s.requests, r.Method+" "+path)
	inject := s.takeFailure(Unauthorized)
	s.mu.Unlock()
	if d := s.o.Latency.API; d > 0 {
		time.Sleep(d)
	}
	if !strings.HasPrefix(r.URL.Path, Prefix+"/") {
		writeError(w, fail(404, "Not Found"))
		return
	}
	if inject || !s.authorized(r.Header.Get("Authorization")) {
		writeError(w, fail(401, "No ticket"))
		return
	}
	params, err := readParams(r)
	if err != nil {
		writeError(w, badParam("body", "%v", err))
		return
	}
	data, aerr := s.route(r.Method, path, params, tokenUser(r.Header.Get("Authorization")))
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	_ = json.NewEncoder(w).Encode(map[string]any{"data": data})
}

func (s *Sim) authorized(h string) bool {
	v, ok := strings.CutPrefix(h, "PVEAPIToken=")
	if !ok {
		return false
	}
	id, secret, ok := strings.Cut(v, "=")
	want, known := s.o.Tokens[id]
	return ok && known && secret == want
}

func tokenUser(h string) string {
	v := strings.TrimPrefix(h, "PVEAPIToken=")
	id, _, _ := strings.Cut(v, "=")
	return id
}

// writeError sends PVE's error shapes. A reason phrase other than Go's
// standard one needs the raw connection: net/http only writes its own.
func writeError(w http.ResponseWriter, e *apiError) {
	body := `{"data":null}`
	if e.params != nil {
		b, _ := json.Marshal(map[string]any{"data": nil, "errors": e.params})
		body = string(b)
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, e.msg, e.code)
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	defer func() { _ = conn.Close() }()
	reason := strings.ReplaceAll(e.msg, "\n", " ")
	fmt.Fprintf(buf, "HTTP/1.1 %d %s\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", e.code, reason, len(body), body)
	_ = buf.Flush()
}

// readParams reads a JSON body (go-proxmox sends JSON) or a form, and the
// query string, into strings as PVE's parameter parser sees them.
func readParams(r *http.Request) (map[string]string, error) {
	out := map[string]string{}
	for k, v := range r.URL.Query() {
		out[k] = v[0]
	}
	if r.Body == nil || r.ContentLength == 0 {
		return out, nil
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var m map[string]any
		if err := json.NewDecoder(bufio.NewReader(r.Body)).Decode(&m); err != nil {
			return nil, err
		}
		for k, v := range m {
			switch x := v.(type) {
			case string:
				out[k] = x
			case float64:
				out[k] = strconv.FormatFloat(x, 'f', -1, 64)
			case bool:
				out[k] = map[bool]string{true: "1", false: "0"}[x]
			case nil:
			default:
				return nil, fmt.Errorf("parameter %s: unexpected %T", k, v)
			}
		}
		return out, nil
	}
	if err := r.ParseForm(); err != nil {
		return nil, err
	}
	for k, v := range r.PostForm {
		out[k] = v[0]
	}
	return out, nil
}

func (s *Sim) takeFailure(m FailureMode) bool {
	for i, f := range s.failures {
		if f == m {
			s.failures = append(s.failures[:i], s.failures[i+1:]...)
			return true
		}
	}
	return false
}

func (s *Sim) route(method, path string, p map[string]string, user string) (any, *apiError) {
	switch {
	case method == "GET" && path == "/version":
		return map[string]any{"version": "8.4.1", "release": "8.4", "repoid": "2a5fa54a8503f96d"}, nil
	case method == "GET" && path == "/cluster/status":
		return []any{map[string]any{"type": "node", "name": s.o.Node, "id": "node/" + s.o.Node, "nodeid": 0, "online": 1, "local": 1, "ip": "127.0.0.1", "level": ""}}, nil
	case method == "GET" && path == "/cluster/nextid":
		return s.nextID(p)
	case method == "GET" && path == "/cluster/resources":
		return s.resources(p)
	}
	if m := reStatus.FindStringSubmatch(path); m != nil && method == "GET" {
		if err := s.checkNode(m[1]); err != nil {
			return nil, err
		}
		return map[string]any{"uptime": 86400, "cpu": 0.02, "loadavg": []string{"0.10", "0.12", "0.08"}, "kversion": "Linux 6.8.12-9-pve", "pveversion": "pve-manager/8.4.1/2a5fa54a8503f96d",
			"memory": map[string]any{"total": 68719476736, "used": 8589934592, "free": 60129542144}, "cpuinfo": map[string]any{"cores": 8, "cpus": 16, "sockets": 1, "model": "simulated"}}, nil
	}
	if m := reTask.FindStringSubmatch(path); m != nil && method == "GET" {
		if err := s.checkNode(m[1]); err != nil {
			return nil, err
		}
		return s.taskStatus(m[2])
	}
	if m := reVM.FindStringSubmatch(path); m != nil {
		if err := s.checkNode(m[1]); err != nil {
			return nil, err
		}
		id, _ := strconv.Atoi(m[2])
		return s.vmRoute(method, id, m[3], p, user)
	}
	return nil, fail(501, "Method '%s %s' not implemented", method, path)
}

func (s *Sim) checkNode(n string) *apiError {
	if n != s.o.Node {
		return fail(500, "hostname lookup '%s' failed - failed to get address info for: %s: Name or service not known", n, n)
	}
	return nil
}

func (s *Sim) nextID(p map[string]string) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := p["vmid"]; ok {
		id, _ := strconv.Atoi(v)
		if s.vms[id] != nil {
			return nil, badParam("vmid", "VM %d already exists", id)
		}
		return strconv.Itoa(id), nil
	}
	for id := 100; ; id++ {
		if s.vms[id] == nil {
			if s.takeFailure(NextIDRace) {
				s.vms[id] = &vm{vmid: id, conf: map[string]string{"name": "other-client", "cores": "1", "memory": "512"}, status: "stopped", lock: make(chan struct{}, 1)}
			}
			return strconv.Itoa(id), nil
		}
	}
}

func (s *Sim) resources(p map[string]string) (any, *apiError) {
	if t, ok := p["type"]; ok && t != "vm" && t != "node" && t != "storage" && t != "sdn" {
		return nil, badParam("type", "value '%s' does not have a value in the enumeration 'vm, storage, node, sdn'", t)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []any{}
	if t := p["type"]; t == "" || t == "vm" {
		ids := make([]int, 0, len(s.vms))
		for id := range s.vms {
			ids = append(ids, id)
		}
		sort.Ints(ids)
		for _, id := range ids {
			v := s.vms[id]
			r := map[string]any{"id": fmt.Sprintf("qemu/%d", id), "type": "qemu", "vmid": id, "name": v.conf["name"], "node": s.o.Node,
				"status": v.status, "template": atoi(v.conf["template"]), "maxcpu": atoi(v.conf["cores"]), "maxmem": atoi(v.conf["memory"]) << 20,
				"maxdisk": diskBytes(v.conf), "uptime": s.uptime(v), "cpu": 0, "mem": 0, "disk": 0, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0}
			if t := v.conf["tags"]; t != "" {
				r["tags"] = t
			}
			if l := v.conf["lock"]; l != "" {
				r["lock"] = l
			}
			out = append(out, r)
		}
	}
	if t := p["type"]; t == "" || t == "node" {
		out = append(out, map[string]any{"id": "node/" + s.o.Node, "type": "node", "node": s.o.Node, "status": "online", "maxcpu": 16, "maxmem": 68719476736, "uptime": 86400})
	}
	return out, nil
}

func (s *Sim) uptime(v *vm) int {
	if v.status != "running" {
		return 0
	}
	return int(time.Since(v.startedAt).Seconds())
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

var reSizeValue = regexp.MustCompile(`size=\d+[KMGT]?`)

var reSize = regexp.MustCompile(`(?:^|,)size=(\d+)([KMGT]?)(?:,|$)`)

// diskBytes is the size of the boot disk (scsi0/virtio0/sata0).
func diskBytes(conf map[string]string) int64 {
	for _, k := range []string{"scsi0", "virtio0", "sata0"} {
		if n, ok := sizeOf(conf[k]); ok {
			return n
		}
	}
	return 0
}

func sizeOf(disk string) (int64, bool) {
	m := reSize.FindStringSubmatch(disk)
	if m == nil {
		return 0, false
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m[2]]
	return n << shift, true
}

func configNotFound(node string, id int) *apiError {
	return fail(500, "Configuration file 'nodes/%s/qemu-server/%d.conf' does not exist", node, id)
}

func (s *Sim) vmRoute(method string, id int, sub string, p map[string]string, user string) (any, *apiError) {
	s.mu.Lock()
	v := s.vms[id]
	s.mu.Unlock()
	if v == nil {
		return nil, configNotFound(s.o.Node, id)
	}
	switch {
	case method == "GET" && sub == "/status/current":
		return s.status(v), nil
	case method == "GET" && sub == "/config":
		return s.config(v), nil
	case method == "POST" && sub == "/clone":
		return s.clone(v, p, user)
	case method == "POST" && sub == "/config":
		return s.updateConfig(v, p, user)
	case method == "PUT" && sub == "/resize":
		return s.resize(v, p, user)
	case method == "POST" && sub == "/status/start":
		return s.start(v, user)
	case method == "POST" && sub == "/status/stop":
		return s.stop(v, user)
	case method == "DELETE" && sub == "":
		return s.destroy(v, p, user)
	case method == "GET" && sub == "/agent/network-get-interfaces":
		return s.agentInterfaces(v)
	case method == "GET" && sub == "/agent/file-read":
		return s.agentFileRead(v, p["file"])
	}
	return nil, fail(501, "Method '%s /nodes/%s/qemu/%d%s' not implemented", method, s.o.Node, id, sub)
}

func (s *Sim) status(v *vm) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]any{"vmid": v.vmid, "name": v.conf["name"], "status": v.status, "qmpstatus": v.status, "cpus": atoi(v.conf["cores"]),
		"maxmem": atoi(v.conf["memory"]) << 20, "maxdisk": diskBytes(v.conf), "uptime": s.uptime(v), "ha": map[string]any{"managed": 0},
		"cpu": 0, "mem": 0, "disk": 0, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0}
	if v.conf["agent"] != "" {
		out["agent"] = atoi(strings.SplitN(v.conf["agent"], ",", 2)[0])
	}
	if v.conf["template"] == "1" {
		out["template"] = 1
	}
	if l := v.conf["lock"]; l != "" {
		out["lock"] = l
	}
	if t := v.conf["tags"]; t != "" {
		out["tags"] = t
	}
	if v.status == "running" {
		out["pid"] = 4242 + v.vmid
	}
	return out
}

// numeric are the config keys PVE returns as JSON numbers.
var numeric = map[string]bool{"cores": true, "sockets": true, "memory": true, "balloon": true, "template": true, "onboot": true, "numa": true}

func (s *Sim) config(v *vm) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]any{"digest": digest(v.conf)}
	for k, val := range v.conf {
		if numeric[k] {
			out[k] = atoi(val)
		} else {
			out[k] = val
		}
	}
	return out
}

func digest(conf map[string]string) string {
	keys := make([]string, 0, len(conf))
	for k := range conf {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := uint64(1469598103934665603)
	for _, k := range keys {
		for _, b := range []byte(k + "=" + conf[k] + "\n") {
			h = (h ^ uint64(b)) * 1099511628211
		}
	}
	return fmt.Sprintf("%016x%024x", h, h>>7)
}

// lockVM takes a VM's config lock, waiting up to LockWait as PVE's flock
// does; an injected LockTimeout fails at once.
func (s *Sim) lockVM(v *vm) *apiError {
	s.mu.Lock()
	injected := s.takeFailure(LockTimeout)
	s.mu.Unlock()
	timeout := fail(500, "can't lock file '/var/lock/qemu-server/lock-%d.conf' - got timeout", v.vmid)
	if injected {
		return timeout
	}
	select {
	case v.lock <- struct{}{}:
		return nil
	case <-time.After(s.o.LockWait):
		return timeout
	}
}

func unlockVM(v *vm) { <-v.lock }

// lockFree takes the config lock of a VM without a VM lock ("clone");
// the caller unlocks.
func (s *Sim) lockFree(v *vm) *apiError {
	if err := s.lockVM(v); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := checkLock(v); err != nil {
		unlockVM(v)
		return err
	}
	return nil
}

// checkLock refuses an operation on a VM with a config lock ("clone").
func checkLock(v *vm) *apiError {
	if l := v.conf["lock"]; l != "" {
		return fail(500, "VM is locked (%s)", l)
	}
	return nil
}

var reName = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

func (s *Sim) clone(src *vm, p map[string]string, user string) (any, *apiError) {
	newid, err := strconv.Atoi(p["newid"])
	if err != nil || newid < 100 || newid > 999999999 {
		return nil, badParam("newid", "value must be between 100 and 999999999")
	}
	if n := p["name"]; n != "" && !reName.MatchString(n) {
		return nil, badParam("name", "invalid format - value does not look like a valid DNS name")
	}
	storage := p["storage"]
	if storage != "" && !contains(s.o.Storages, storage) {
		return nil, fail(500, "storage '%s' does not exist", storage)
	}
	if t := p["target"]; t != "" && t != s.o.Node {
		return nil, fail(500, "no such cluster node '%s'", t)
	}
	full := p["full"] == "1" || p["full"] == "true"
	if src.conf["template"] != "1" && !full {
		return nil, badParam("full", "linked clone feature is not supported for this VM (only for templates)")
	}
	if storage != "" && !full {
		return nil, badParam("storage", "option is only allowed for full clones")
	}
	if err := s.lockVM(src); err != nil {
		return nil, err
	}
	defer unlockVM(src)
	s.mu.Lock()
	if s.vms[newid] != nil {
		s.mu.Unlock()
		return nil, fail(500, "unable to create VM %d: config file already exists", newid)
	}
	conf := map[string]string{}
	for k, val := range src.conf {
		if k != "template" && k != "name" && k != "lock" {
			conf[k] = val
		}
	}
	conf["name"] = p["name"]
	if conf["name"] == "" {
		conf["name"] = fmt.Sprintf("Copy-of-VM-%s", src.conf["name"])
	}
	if d := p["description"]; d != "" {
		conf["description"] = d
	}
	conf["lock"] = "clone"
	if storage != "" {
		for _, k := range []string{"scsi0", "virtio0", "sata0"} {
			if d := conf[k]; d != "" {
				_, rest, _ := strings.Cut(d, ",")
				conf[k] = fmt.Sprintf("%s:vm-%d-disk-0,%s", storage, newid, rest)
			}
		}
	}
	nv := &vm{vmid: newid, conf: conf, status: "stopped", lock: make(chan struct{}, 1)}
	s.vms[newid] = nv
	failMode := FailureMode(0)
	switch {
	case s.takeFailure(CloneFails):
		failMode = CloneFails
	case s.takeFailure(CloneFailsLocked):
		failMode = CloneFailsLocked
	}
	s.mu.Unlock()
	return s.runTask("qmclone", strconv.Itoa(src.vmid), user, s.o.Latency.Clone, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		switch failMode {
		case CloneFails:
			delete(s.vms, newid)
			return fmt.Errorf("clone failed: copy failed: command '/usr/bin/qemu-img convert -p -n -f raw -O raw /dev/pve/base-%d-disk-0 zeroinit:/dev/pve/vm-%d-disk-0' failed: exit code 1", src.vmid, newid)
		case CloneFailsLocked:
			return fmt.Errorf("clone failed: copy failed: storage '%s' went away; cleanup failed: can't lock file '/var/lock/qemu-server/lock-%d.conf' - got timeout", storage, newid)
		}
		delete(nv.conf, "lock")
		return nil
	}), nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// settable are the config keys the simulator accepts, with their checks.
var settable = map[string]func(string) string{
	"cores":        intRange(1, 8192),
	"sockets":      intRange(1, 4),
	"memory":       intRange(16, 8388608),
	"agent":        oneOf("0", "1", "enabled=1", "enabled=0"),
	"ciuser":       nonEmpty,
	"sshkeys":      urlencoded,
	"ipconfig0":    ipconfig,
	"nameserver":   nonEmpty,
	"searchdomain": nonEmpty,
	"net0":         net0,
	"description":  func(string) string { return "" },
	"tags":         func(string) string { return "" },
	"name": func(v string) string {
		return map[bool]string{true: "", false: "invalid format - value does not look like a valid DNS name"}[reName.MatchString(v)]
	},
	"onboot": oneOf("0", "1"),
}

func intRange(lo, hi int) func(string) string {
	return func(v string) string {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Sprintf("type check ('integer') failed - got '%s'", v)
		}
		if n < lo || n > hi {
			return fmt.Sprintf("value must have a minimum value of %d and a maximum of %d", lo, hi)
		}
		return ""
	}
}

func oneOf(vals ...string) func(string) string {
	return func(v string) string {
		if contains(vals, v) {
			return ""
		}
		return fmt.Sprintf("value '%s' does not have a value in the enumeration '%s'", v, strings.Join(vals, ", "))
	}
}

func nonEmpty(v string) string {
	if v == "" {
		return "value may not be empty"
	}
	return ""
}

var reURLEncoded = regexp.MustCompile(`^[A-Za-z0-9%._~-]*$`)

func urlencoded(v string) string {
	if !reURLEncoded.MatchString(v) {
		return "invalid format - invalid urlencoded string: " + v
	}
	if _, err := url.PathUnescape(v); err != nil {
		return "invalid format - invalid urlencoded string: " + v
	}
	return ""
}

func ipconfig(v string) string {
	if _, _, err := parseIPConfig(v); err != nil {
		return "invalid format - " + err.Error()
	}
	return ""
}

func parseIPConfig(v string) (netip.Prefix, string, error) {
	var ip netip.Prefix
	gw := ""
	for _, part := range strings.Split(v, ",") {
		k, val, _ := strings.Cut(part, "=")
		switch k {
		case "ip":
			p, err := netip.ParsePrefix(val)
			if err != nil && val != "dhcp" {
				return ip, gw, fmt.Errorf("ip: %q is not a CIDR or dhcp", val)
			}
			ip = p
		case "gw":
			if _, err := netip.ParseAddr(val); err != nil {
				return ip, gw, fmt.Errorf("gw: %q is not an IP address", val)
			}
			gw = val
		case "ip6", "gw6":
		default:
			return ip, gw, fmt.Errorf("unknown key %q", k)
		}
	}
	return ip, gw, nil
}

var reNet = regexp.MustCompile(`^(virtio|e1000|vmxnet3|rtl8139)(=[0-9A-Fa-f:]{17})?(,bridge=[a-zA-Z0-9_.]+)?(,firewall=[01])?$`)

func net0(v string) string {
	if !reNet.MatchString(v) {
		return "invalid format - format error: " + v
	}
	return ""
}

func (s *Sim) updateConfig(v *vm, p map[string]string, user string) (any, *apiError) {
	errs := map[string]string{}
	for k, val := range p {
		check, ok := settable[k]
		switch {
		case k == "delete" || k == "digest":
		case !ok:
			errs[k] = "property is not defined in schema and the schema does not allow additional properties"
		default:
			if msg := check(val); msg != "" {
				errs[k] = msg
			}
		}
	}
	if len(errs) > 0 {
		return nil, &apiError{code: 400, msg: "Parameter verification failed.", params: errs}
	}
	if err := s.lockFree(v); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if d := p["digest"]; d != "" && d != digest(v.conf) {
		s.mu.Unlock()
		unlockVM(v)
		return nil, fail(500, "detected modified configuration - file changed by other user? Try again.")
	}
	s.mu.Unlock()
	return s.runTask("qmconfig", strconv.Itoa(v.vmid), user, s.o.Latency.Config, func() error {
		defer unlockVM(v)
		s.mu.Lock()
		defer s.mu.Unlock()
		for k, val := range p {
			if k == "digest" {
				continue
			}
			if k == "delete" {
				for _, d := range strings.Split(val, ",") {
					delete(v.conf, d)
				}
				continue
			}
			v.conf[k] = val
		}
		return nil
	}), nil
}

func (s *Sim) resize(v *vm, p map[string]string, user string) (any, *apiError) {
	disk, size := p["disk"], p["size"]
	cur, ok := sizeOf(v.conf[disk])
	if !ok {
		return nil, badParam("disk", "unable to parse drive options")
	}
	m := regexp.MustCompile(`^(\+)?(\d+)([KMGT])?$`).FindStringSubmatch(size)
	if m == nil {
		return nil, badParam("size", "value does not match the regex pattern")
	}
	n, _ := strconv.ParseInt(m[2], 10, 64)
	n <<= map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m[3]]
	want := n
	if m[1] == "+" {
		want = cur + n
	}
	if want < cur {
		return nil, fail(500, "VM %d - shrinking disks is not supported", v.vmid)
	}
	if err := s.lockFree(v); err != nil {
		return nil, err
	}
	return s.runTask("resize", strconv.Itoa(v.vmid), user, s.o.Latency.Resize, func() error {
		defer unlockVM(v)
		s.mu.Lock()
		defer s.mu.Unlock()
		v.conf[disk] = reSizeValue.ReplaceAllString(v.conf[disk], fmt.Sprintf("size=%dG", want>>30))
		return nil
	}), nil
}

func (s *Sim) start(v *vm, user string) (any, *apiError) {
	s.mu.Lock()
	if err := checkLock(v); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if v.conf["template"] == "1" {
		s.mu.Unlock()
		return nil, fail(500, "VM %d is a template - start failed", v.vmid)
	}
	s.mu.Unlock()
	if err := s.lockVM(v); err != nil {
		return nil, err
	}
	return s.runTask("qmstart", strconv.Itoa(v.vmid), user, s.o.Latency.Start, func() error {
		defer unlockVM(v)
		s.mu.Lock()
		if v.status == "running" {
			s.mu.Unlock()
			return fmt.Errorf("VM %d already running", v.vmid)
		}
		v.status, v.startedAt, v.agentReady = "running", time.Now(), false
		snap := s.snapshot(v)
		s.mu.Unlock()
		if h := s.o.Hooks.Start; h != nil {
			if err := h(s.ctx, snap); err != nil {
				s.mu.Lock()
				v.status = "stopped"
				s.mu.Unlock()
				return fmt.Errorf("start failed: %w", err)
			}
		}
		s.mu.Lock()
		v.agentReady = v.conf["agent"] == "1" || v.conf["agent"] == "enabled=1"
		s.mu.Unlock()
		return nil
	}), nil
}

func (s *Sim) stop(v *vm, user string) (any, *apiError) {
	if err := s.lockVM(v); err != nil {
		return nil, err
	}
	return s.runTask("qmstop", strconv.Itoa(v.vmid), user, s.o.Latency.Stop, func() error {
		defer unlockVM(v)
		s.mu.Lock()
		v.status, v.agentReady = "stopped", false
		snap := s.snapshot(v)
		s.mu.Unlock()
		if h := s.o.Hooks.Stop; h != nil {
			return h(s.ctx, snap)
		}
		return nil
	}), nil
}

func (s *Sim) destroy(v *vm, p map[string]string, user string) (any, *apiError) {
	if p["skiplock"] == "1" && user != "root@pam" {
		return nil, badParam("skiplock", "Only root may use this option.")
	}
	s.mu.Lock()
	running := v.status == "running"
	lockErr := checkLock(v)
	s.mu.Unlock()
	if running {
		return nil, fail(500, "VM %d is running - destroy failed", v.vmid)
	}
	if lockErr != nil && p["skiplock"] != "1" {
		return nil, lockErr
	}
	if err := s.lockVM(v); err != nil {
		return nil, err
	}
	return s.runTask("qmdestroy", strconv.Itoa(v.vmid), user, s.o.Latency.Destroy, func() error {
		defer unlockVM(v)
		s.mu.Lock()
		snap := s.snapshot(v)
		delete(s.vms, v.vmid)
		s.mu.Unlock()
		if h := s.o.Hooks.Destroy; h != nil {
			return h(s.ctx, snap)
		}
		return nil
	}), nil
}

func (s *Sim) agentInterfaces(v *vm) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v.status != "running" {
		return nil, fail(500, "VM %d is not running", v.vmid)
	}
	if !v.agentReady {
		return nil, fail(500, "QEMU guest agent is not running")
	}
	ifaces := []any{map[string]any{"name": "lo", "hardware-address": "00:00:00:00:00:00",
		"ip-addresses": []any{map[string]any{"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8}}}}
	eth := map[string]any{"name": "eth0", "hardware-address": "bc:24:11:00:00:01", "ip-addresses": []any{}}
	if ip, _, err := parseIPConfig(v.conf["ipconfig0"]); err == nil && ip.IsValid() {
		eth["ip-addresses"] = []any{map[string]any{"ip-address": ip.Addr().String(), "ip-address-type": "ipv4", "prefix": ip.Bits()}}
	}
	return map[string]any{"result": append(ifaces, eth)}, nil
}

func (s *Sim) agentFileRead(v *vm, path string) (any, *apiError) {
	s.mu.Lock()
	running, ready, snap := v.status == "running", v.agentReady, s.snapshot(v)
	s.mu.Unlock()
	switch {
	case path == "":
		return nil, badParam("file", "property is missing and it is not optional")
	case !running:
		return nil, fail(500, "VM %d is not running", v.vmid)
	case !ready:
		return nil, fail(500, "QEMU guest agent is not running")
	}
	var data []byte
	err := fmt.Errorf("no such file")
	if h := s.o.Hooks.ReadFile; h != nil {
		data, err = h(s.ctx, snap, path)
	}
	if err != nil {
		return nil, fail(500, "Agent error: Failed to open file '%s': No such file or directory", path)
	}
	return map[string]any{"content": string(data), "truncated": 0}, nil
}

// runTask starts a worker like PVE's fork_worker and returns its UPID.
func (s *Sim) runTask(typ, id, user string, d time.Duration, work func() error) string {
	s.mu.Lock()
	s.pid++
	now := time.Now()
	t := &task{typ: typ, id: id, user: user, start: now, pid: s.pid}
	t.upid = fmt.Sprintf("UPID:%s:%08X:%08X:%08X:%s:%s:%s:", s.o.Node, t.pid, now.UnixNano()/1e7&0xffffffff, now.Unix(), typ, id, user)
	s.tasks[t.upid] = t
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case <-time.After(d):
		case <-s.ctx.Done():
		}
		err := work()
		s.mu.Lock()
		defer s.mu.Unlock()
		t.done, t.end, t.status = true, time.Now(), "OK"
		if err != nil {
			t.status = err.Error()
		}
	}()
	return t.upid
}

func (s *Sim) taskStatus(upid string) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tasks[upid]
	if t == nil {
		return nil, fail(500, "no such task")
	}
	out := map[string]any{"upid": t.upid, "node": s.o.Node, "pid": t.pid, "pstart": t.start.UnixNano() / 1e7 & 0xffffffff, "starttime": t.start.Unix(),
		"type": t.typ, "id": t.id, "user": t.user, "status": "running"}
	if t.done {
		out["status"], out["exitstatus"], out["endtime"] = "stopped", t.status, t.end.Unix()
	}
	return out, nil
}

// Remove is the operator's `qm destroy VMID` (hooks not called).
func (s *Sim) Remove(vmid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.vms, vmid)
}

// AddVM adds a VM with the given config (name is set), running or not,
// as if made outside labctl.
func (s *Sim) AddVM(vmid int, name string, conf map[string]string, running bool) {
	s.AddTemplate(vmid, name, conf)
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vms[vmid]
	delete(v.conf, "template")
	if running {
		v.status, v.startedAt = "running", time.Now()
		v.agentReady = v.conf["agent"] == "1" || v.conf["agent"] == "enabled=1"
	}
}

// PowerOff stops a VM as a crash or power loss would (hooks not called).
func (s *Sim) PowerOff(vmid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.vms[vmid]; v != nil {
		v.status, v.agentReady = "stopped", false
	}
}

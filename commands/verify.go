package commands

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labctl/labctl/bootstrap"
	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/kube"
	"github.com/labctl/labctl/provision/prereq"
	"github.com/labctl/labctl/provision/remote"
	"github.com/labctl/labctl/verify"
)

// VerifyOptions shape `labctl verify`.
type VerifyOptions struct {
	// DNSServer (host[:port]) answers the DNS checks instead of the
	// system resolver.
	DNSServer  string
	Kubeconfig string
	StateDir   string
	Proxmox    ProxmoxOptions
	// HTTPPort is the ingress port asked on each node address (80).
	HTTPPort int
}

// ErrVerifyFailed: at least one check failed (exit status 1).
var ErrVerifyFailed = errors.New("verify: checks failed")

// Verify checks the live cluster against its profile, read-only, and
// prints every check; it returns ErrVerifyFailed when one fails.
func Verify(ctx context.Context, e Env, a ProfileArg, o VerifyOptions) error {
	if e.Output != OutputText && e.Output != OutputJSON && e.Output != "" {
		return fmt.Errorf("output %q: want text or json", e.Output)
	}
	l, err := e.Load(a)
	if err != nil {
		return err
	}
	if o.HTTPPort == 0 {
		o.HTTPPort = 80
	}
	start := time.Now()
	w, err := e.backends(l, wiring{Kubeconfig: o.Kubeconfig, StateDir: o.StateDir, Proxmox: o.Proxmox})
	if err != nil {
		return err
	}
	defer w.Close()
	s := &l.Spec
	var r verify.Report
	if s.K3d != nil {
		r = verifyK3d(ctx, s, w, o)
	} else {
		r = verifyNodes(ctx, s, w, o)
	}
	if e.Output == OutputJSON {
		err = verify.WriteJSON(e.Stdout, r)
	} else {
		err = verify.WriteText(e.Stdout, r)
		if err == nil {
			line := fmt.Sprintf("checked in %s", time.Since(start).Round(time.Millisecond))
			if c := w.connections(); c != "" {
				line += "; SSH connections/commands per host:" + c
			}
			fmt.Fprintln(e.Stdout, line)
		}
	}
	if err != nil {
		return err
	}
	if r.Failed() {
		return ErrVerifyFailed
	}
	return nil
}

// verifyNodes checks a cluster of SSH nodes: each host with one command
// (in parallel), etcd and the API through the first server whose K3s
// runs, then DNS and HTTP.
func verifyNodes(ctx context.Context, s *profiles.Spec, w *wired, o VerifyOptions) verify.Report {
	obs := verify.Observed{Now: time.Now(), Hosts: map[string]verify.Host{}, ConnErr: map[string]error{}, HostErr: map[string]error{}, DNSServer: o.DNSServer}
	if w.VMs != nil {
		obs.VMs = map[string]facts.VM{}
		for _, n := range s.Nodes {
			v, err := w.VMs.ObserveVM(ctx, n)
			if err != nil {
				obs.VMErr = err
				break
			}
			obs.VMs[n.Name] = v
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range s.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := readHost(ctx, w, n, prereq.WantFor(s, n))
			mu.Lock()
			defer mu.Unlock()
			var ce *connectError
			switch {
			case errors.As(err, &ce):
				obs.ConnErr[n.Name] = ce.err
			case err != nil:
				obs.HostErr[n.Name] = err
			default:
				obs.Hosts[n.Name] = h
			}
		}()
	}
	wg.Wait()
	// etcd and the API through the first server whose K3s runs.
	var via *profiles.Node
	for _, n := range s.Servers() {
		if h, ok := obs.Hosts[n.Name]; ok && h.K3s.Active {
			via = &n
			break
		}
	}
	if via == nil {
		obs.EtcdErr = errors.New("no server's K3s runs")
		obs.APIErr = obs.EtcdErr
	} else {
		if e, err := w.k3s.ObserveEtcd(ctx, *via); err != nil {
			obs.EtcdErr = err
		} else {
			obs.Etcd = &e
		}
		obs.API, obs.Flux, obs.APIErr, obs.FluxErr = readAPI(ctx, s, func(ctx context.Context) (*kube.Client, error) { return w.k3s.API(ctx, *via) })
	}
	obs.HTTP = httpAnswers(ctx, verify.NodeAddresses(s), o.HTTPPort)
	obs.DNS = resolveAll(ctx, s, o.DNSServer)
	return verify.Nodes(s, obs)
}

// verifyK3d checks a k3d cluster: its nodes, the Docker host, the API,
// Flux and DNS.
func verifyK3d(ctx context.Context, s *profiles.Spec, w *wired, o VerifyOptions) verify.Report {
	var r verify.Report
	b := w.k3d
	nodes, nodesErr := b.Nodes(ctx)
	d, dErr := b.DockerHost(ctx)
	r.Merge(verify.K3dChecks(s, nodes, nodesErr, d))
	if dErr != nil && nodesErr == nil {
		r.Merge(verify.Report{Checks: []verify.Check{{Group: verify.GroupHosts, Name: "docker host", Target: "cluster", Status: verify.Warn, Observed: dErr.Error(), Expected: "the Docker host read"}}})
	}
	if dh, _, ok := s.DockerHostMachine(); ok && w.hosts != nil {
		// The profile's tuning of the Docker host, as preflight reads it.
		if f, err := w.hosts.Gather(ctx, dh); err != nil {
			r.Merge(verify.Report{Checks: []verify.Check{{Group: verify.GroupHosts, Name: "tuning", Target: dh.Name, Status: verify.Fail, Observed: err.Error(), Expected: "the Docker host's tuning read over SSH"}}})
		} else {
			r.Merge(verify.PrerequisiteChecks(s, dh, f))
		}
	}
	api, flux, apiErr, fluxEr := readAPI(ctx, s, b.API)
	var names []string
	servers := map[string]bool{}
	for _, n := range nodes {
		names = append(names, n.Name)
		servers[n.Name] = n.Role == "server"
	}
	r.Merge(verify.NodeChecks(names, servers, api, apiErr))
	r.Merge(verify.StorageChecks(s, api, flux != nil))
	var targets []string
	for _, p := range s.K3d.Ports {
		if p.ContainerPort == 80 {
			targets = append(targets, net.JoinHostPort(s.K3d.APIHost, strconv.Itoa(p.HostPort)))
		}
	}
	r.Merge(verify.IngressChecks(s, api, nil, httpAnswersAt(ctx, targets)))
	if apiErr == nil {
		r.Merge(verify.FluxChecks(s, flux, fluxEr))
		r.Merge(verify.SecretChecks(s, api))
	}
	r.Merge(verify.DNSChecks(s, resolveAll(ctx, s, o.DNSServer), o.DNSServer))
	return r
}

// connectError: the SSH login itself failed (host key, credentials,
// unreachable).
type connectError struct{ err error }

func (e *connectError) Error() string { return e.err.Error() }

// readHost runs verify's host script on n, as root, in one command.
func readHost(ctx context.Context, w *wired, n profiles.Node, want prereq.Want) (verify.Host, error) {
	h, err := w.k3s.Hosts.Host(ctx, n)
	if err != nil {
		return verify.Host{}, &connectError{err}
	}
	sent := time.Now()
	res, err := h.Run(ctx, remote.Cmd{Script: verify.HostScript(want), Sudo: true})
	received := time.Now()
	if err != nil {
		return verify.Host{}, fmt.Errorf("%s: %w", n.Name, err)
	}
	vh, err := verify.ParseHost(res.Stdout)
	if err != nil {
		return vh, fmt.Errorf("%s: %w", n.Name, err)
	}
	vh.Sent, vh.Received = sent, received
	return vh, nil
}

// readAPI reads the API's facts and Flux's state through one client.
func readAPI(ctx context.Context, s *profiles.Spec, client func(context.Context) (*kube.Client, error)) (*facts.API, *facts.FluxState, error, error) {
	c, err := client(ctx)
	if err != nil {
		return nil, nil, err, nil
	}
	namespaces := []string{"kube-system", bootstrap.Namespace, facts.MonitoringNamespace}
	for _, sec := range verify.SecretNames(s) {
		ns, _, _ := strings.Cut(sec, "/")
		if !slices.Contains(namespaces, ns) {
			namespaces = append(namespaces, ns)
		}
	}
	api, err := c.Inspect(ctx, namespaces)
	if err != nil {
		return nil, nil, err, nil
	}
	fb := &bootstrap.Backend{Spec: s}
	if err := fb.ForREST(c.REST()); err != nil {
		return api, nil, nil, err
	}
	flux, err := fb.State(ctx)
	return api, flux, nil, err
}

// httpAnswers asks http://addr:port/ on each address.
func httpAnswers(ctx context.Context, addrs []string, port int) map[string]string {
	var targets []string
	for _, a := range addrs {
		targets = append(targets, net.JoinHostPort(a, strconv.Itoa(port)))
	}
	return httpAnswersAt(ctx, targets)
}

// httpAnswersAt asks http://target/ on each host:port, in parallel: any
// HTTP response (a 404 from Traefik without a route included) is an
// answer; the value is why there was none.
func httpAnswersAt(ctx context.Context, targets []string) map[string]string {
	out := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 3 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			why := ""
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+t+"/", nil)
			if err == nil {
				var resp *http.Response
				if resp, err = client.Do(req); err == nil {
					_ = resp.Body.Close()
				}
			}
			if err != nil {
				why = err.Error()
			}
			mu.Lock()
			out[t] = why
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// resolveAll resolves every DNS record of the profile, through server
// when given (host[:port], port 53 by default).
func resolveAll(ctx context.Context, s *profiles.Spec, server string) map[string]facts.DNSAnswer {
	res := net.DefaultResolver
	if server != "" {
		if _, _, err := net.SplitHostPort(server); err != nil {
			server = net.JoinHostPort(server, "53")
		}
		res = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, server)
		}}
	}
	out := map[string]facts.DNSAnswer{}
	for _, rec := range s.DNS.Records {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		addrs, err := res.LookupHost(ctx, rec.Name)
		cancel()
		if err != nil {
			// A DNSError names resolv.conf's server even when another
			// was dialled: keep its reason only.
			why := err.Error()
			var de *net.DNSError
			if errors.As(err, &de) {
				why = de.Err
			}
			out[rec.Name] = facts.DNSAnswer{Err: why}
		} else {
			out[rec.Name] = facts.DNSAnswer{Addrs: addrs}
		}
	}
	return out
}

// Package verify checks a live cluster against its profile and the
// homelab architecture: machines, hosts, K3s, etcd, Kubernetes, storage,
// ingress, Flux, secrets and DNS. It is pure: the command observes (one
// SSH command per host, a few API reads, DNS and HTTP), this package
// turns the observations into checks, each ok, warn or fail with what was
// observed and what was expected. No check stops another.
package verify

import (
	"fmt"
	"strings"
)

// Status of one check.
type Status string

// Check statuses: fail is wrong now; warn is a risk, or what cannot be
// checked yet.
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Groups, in report order.
const (
	GroupMachines = "Machines"
	GroupHosts    = "Hosts"
	GroupK3s      = "K3s"
	GroupEtcd     = "etcd"
	GroupKube     = "Kubernetes"
	GroupStorage  = "Storage"
	GroupIngress  = "Ingress"
	GroupFlux     = "Flux"
	GroupSecrets  = "Secrets"
	GroupDNS      = "DNS"
)

var groups = []string{GroupMachines, GroupHosts, GroupK3s, GroupEtcd, GroupKube, GroupStorage, GroupIngress, GroupFlux, GroupSecrets, GroupDNS}

// Check is one verified item.
type Check struct {
	Group string `json:"group"`
	Name  string `json:"check"`
	// Target is the host or object checked ("cluster" for the whole).
	Target   string `json:"target"`
	Status   Status `json:"status"`
	Observed string `json:"observed"`
	Expected string `json:"expected,omitempty"`
}

// ID names the check: group/check/target.
func (c Check) ID() string { return c.Group + "/" + c.Name + "/" + c.Target }

// Report is every check of one verify run.
type Report struct {
	Checks []Check `json:"checks"`
}

func (r *Report) add(group, name, target string, st Status, observed, expected string) {
	r.Checks = append(r.Checks, Check{Group: group, Name: name, Target: target, Status: st, Observed: observed, Expected: expected})
}

func (r *Report) ok(group, name, target, observed string) {
	r.add(group, name, target, OK, observed, "")
}

// Counts is how many checks have each status.
func (r Report) Counts() (ok, warn, fail int) {
	for _, c := range r.Checks {
		switch c.Status {
		case OK:
			ok++
		case Warn:
			warn++
		case Fail:
			fail++
		}
	}
	return ok, warn, fail
}

// Failed: at least one check failed.
func (r Report) Failed() bool {
	_, _, f := r.Counts()
	return f > 0
}

// Summary is the report's last line.
func (r Report) Summary() string {
	ok, warn, fail := r.Counts()
	return fmt.Sprintf("%d checks: %d ok, %d warn, %d fail", len(r.Checks), ok, warn, fail)
}

// NotOK lists the IDs of the checks that are not ok, with their status:
// "fail etcd/members/cluster".
func (r Report) NotOK() []string {
	var out []string
	for _, c := range r.Checks {
		if c.Status != OK {
			out = append(out, string(c.Status)+" "+c.ID())
		}
	}
	return out
}

// Merge appends other's checks.
func (r *Report) Merge(other Report) { r.Checks = append(r.Checks, other.Checks...) }

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

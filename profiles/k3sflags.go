package profiles

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// K3sConfig is extra /etc/rancher/k3s/config.yaml keys, with K3s's own
// names (disable-helm-controller: true, kubelet-arg: [max-pods=150]).
// Values are scalars or lists of scalars, as K3s's config file takes them.
type K3sConfig map[string]any

// flagKind is what a K3s option takes in config.yaml.
type flagKind int

const (
	flagBool   flagKind = iota // --debug
	flagString                 // --cluster-domain value
	flagList                   // --kubelet-arg value, repeatable
)

// k3sFlag is one option of `k3s server` or `k3s agent`.
type k3sFlag struct {
	kind flagKind
	// agent: `k3s agent` knows it too (servers run an agent, so every
	// agent option is also a server option).
	agent bool
}

// k3sFlags are the options of K3s v1.32–v1.34 as their `k3s server
// --help` and `k3s agent --help` list them (docs.k3s.io/cli/server,
// /cli/agent). A key outside it is refused: K3s exits on an unknown key
// in config.yaml.
var k3sFlags = func() map[string]k3sFlag {
	m := map[string]k3sFlag{}
	add := func(kind flagKind, agent bool, names string) {
		for _, n := range strings.Fields(names) {
			m[n] = k3sFlag{kind, agent}
		}
	}
	// Both server and agent.
	add(flagBool, true, `debug alsologtostderr with-node-id selinux protect-kernel-defaults docker
		disable-default-registry-endpoint nonroot-devices enable-pprof rootless prefer-bundled-bin`)
	add(flagString, true, `v vmodule log token token-file server data-dir node-name
		image-credential-provider-bin-dir image-credential-provider-config lb-server-port
		container-runtime-endpoint default-runtime image-service-endpoint pause-image snapshotter
		private-registry resolv-conf flannel-iface flannel-conf flannel-cni-conf vpn-auth vpn-auth-file
		bind-address config`)
	add(flagList, true, `node-label node-taint node-ip node-external-ip node-internal-dns node-external-dns
		kubelet-arg kube-proxy-arg`)
	add(flagBool, true, "disable-apiserver-lb")
	// Server only.
	add(flagBool, false, `tls-san-security flannel-ipv6-masq flannel-external-ip cluster-init cluster-reset
		etcd-expose-metrics etcd-disable-snapshots etcd-snapshot-compress etcd-s3 etcd-s3-skip-ssl-verify
		etcd-s3-insecure disable-scheduler disable-cloud-controller disable-kube-proxy disable-network-policy
		disable-helm-controller embedded-registry supervisor-metrics secrets-encryption
		disable-agent disable-etcd disable-apiserver disable-controller-manager`)
	add(flagString, false, `https-listen-port advertise-address advertise-port service-node-port-range
		cluster-domain flannel-backend egress-selector-mode servicelb-namespace write-kubeconfig
		write-kubeconfig-mode write-kubeconfig-group helm-job-image agent-token agent-token-file
		cluster-reset-restore-path datastore-endpoint datastore-cafile datastore-certfile datastore-keyfile
		etcd-snapshot-name etcd-snapshot-schedule-cron etcd-snapshot-retention etcd-snapshot-dir
		etcd-s3-endpoint etcd-s3-endpoint-ca etcd-s3-access-key etcd-s3-secret-key etcd-s3-bucket
		etcd-s3-region etcd-s3-folder etcd-s3-proxy etcd-s3-config-secret etcd-s3-timeout
		default-local-storage-path system-default-registry secrets-encryption-provider`)
	add(flagList, false, `tls-san cluster-cidr service-cidr cluster-dns disable kube-apiserver-arg etcd-arg
		kube-controller-manager-arg kube-scheduler-arg kube-cloud-controller-manager-arg`)
	return m
}()

// k3sOwned are the options labctl sets itself, with what sets them.
var k3sOwned = map[string]string{
	"token":                      "labctl's token file (spec.k3s.tokenRef)",
	"token-file":                 "labctl's token file (spec.k3s.tokenRef)",
	"agent-token":                "labctl's token file (spec.k3s.tokenRef)",
	"agent-token-file":           "labctl's token file (spec.k3s.tokenRef)",
	"server":                     "labctl (which server a node joins)",
	"cluster-init":               "labctl (only the first server initialises the cluster)",
	"cluster-reset":              "labctl restore",
	"cluster-reset-restore-path": "labctl restore",
	"node-name":                  "spec.nodes[].name",
	"with-node-id":               "spec.nodes[].name (labctl finds a node's Node by its name)",
	"node-ip":                    "spec.nodes[].address",
	"advertise-address":          "spec.nodes[].address",
	"tls-san":                    "spec.dns.records (labctl adds the servers' addresses and the names pointing at them)",
	"cluster-cidr":               "spec.k3s.clusterCIDR",
	"service-cidr":               "spec.k3s.serviceCIDR",
	"disable":                    "spec.k3s.disable",
	"write-kubeconfig-mode":      "labctl (it fetches the kubeconfig as root, mode 0600)",
	"write-kubeconfig":           "labctl (it fetches /etc/rancher/k3s/k3s.yaml)",
	"data-dir":                   "K3s's default /var/lib/rancher/k3s, which labctl's rebuild, restore and verify read",
	"config":                     "labctl (it writes /etc/rancher/k3s/config.yaml)",
	"datastore-endpoint":         "labctl's embedded etcd (an external datastore is not supported)",
	"disable-etcd":               "labctl's embedded etcd on every server",
	"disable-apiserver":          "labctl (every server runs the control plane)",
	"disable-controller-manager": "labctl (every server runs the control plane)",
	"disable-scheduler":          "labctl (every server runs the control plane)",
	"disable-agent":              "labctl (every server is a Node it waits for)",
}

// k3sSecretOptions take a secret value; a profile never holds one.
var k3sSecretOptions = map[string]string{
	"etcd-s3-secret-key": "etcd-s3-config-secret (a Secret in kube-system)",
	"etcd-s3-access-key": "etcd-s3-config-secret (a Secret in kube-system)",
	"vpn-auth":           "vpn-auth-file (a file on the node)",
}

// K3sCritical are the options K3s requires to be equal on every server
// (docs.k3s.io/cli/server, "Critical Configuration Values"); a server
// whose values differ cannot join. labctl renders spec.k3s.config the
// same on every server, and refuses to change one on a running cluster.
var K3sCritical = []string{"agent-token", "cluster-cidr", "cluster-dns", "cluster-domain", "disable-cloud-controller",
	"disable-helm-controller", "disable-network-policy", "disable", "egress-selector-mode", "embedded-registry",
	"flannel-backend", "flannel-external-ip", "flannel-ipv6-masq", "secrets-encryption", "secrets-encryption-provider", "service-cidr"}

var (
	nodeLabelRE = regexp.MustCompile(`^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?=([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$`)
	nodeTaintRE = regexp.MustCompile(`^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?(=[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?:(NoSchedule|PreferNoSchedule|NoExecute)$`)
	// A component argument: name=value, no leading dashes (K3s adds them).
	componentArgRE = regexp.MustCompile(`^[a-z][a-z0-9-]*(=.*)?$`)
	cronFieldRE    = regexp.MustCompile(`^[0-9*/,-]+$`)
)

// k3sConfig checks spec.k3s.config (agent false) or agentConfig.
func (c *checker) k3sConfig(path string, cfg K3sConfig, agent bool) {
	for _, k := range sortedKeys(cfg) {
		at := path + "." + k
		f, known := k3sFlags[k]
		switch {
		case k3sOwned[k] != "":
			c.add(at, "set by %s; labctl writes it, not spec.k3s.%s", k3sOwned[k], map[bool]string{false: "config", true: "agentConfig"}[agent])
			continue
		case k3sSecretOptions[k] != "":
			c.add(at, "takes a secret, and a profile never holds one; use %s", k3sSecretOptions[k])
			continue
		case !known:
			c.add(at, "not an option of K3s %s (K3s exits on an unknown key in config.yaml)%s", map[bool]string{false: "server", true: "agent"}[agent], suggestFlag(k))
			continue
		case agent && !f.agent:
			c.add(at, "an option of k3s server only; agents do not know it (set it in spec.k3s.config)")
			continue
		}
		v := cfg[k]
		switch f.kind {
		case flagBool:
			if _, ok := v.(bool); !ok {
				c.add(at, "want true or false, got %v", v)
			}
		case flagString:
			if !scalar(v) {
				c.add(at, "want a single value, got a list")
			}
		case flagList:
			for i, e := range listOf(v) {
				if !scalar(e) {
					c.add(fmt.Sprintf("%s[%d]", at, i), "want a value, got %v", e)
					continue
				}
				s := fmt.Sprint(e)
				switch {
				case k == "node-label" && !nodeLabelRE.MatchString(s):
					c.add(fmt.Sprintf("%s[%d]", at, i), "%q: want key=value (a Kubernetes label)", s)
				case k == "node-taint" && !nodeTaintRE.MatchString(s):
					c.add(fmt.Sprintf("%s[%d]", at, i), "%q: want key[=value]:NoSchedule|PreferNoSchedule|NoExecute", s)
				case strings.HasSuffix(k, "-arg") && !componentArgRE.MatchString(s):
					c.add(fmt.Sprintf("%s[%d]", at, i), "%q: want name=value without leading dashes (K3s adds them)", s)
				}
			}
		}
		if k == "etcd-snapshot-schedule-cron" {
			if s, ok := v.(string); !ok || len(strings.Fields(s)) != 5 || slices.ContainsFunc(strings.Fields(s), func(f string) bool { return !cronFieldRE.MatchString(f) }) {
				c.add(at, "%v: want a cron spec of 5 fields, such as \"0 */6 * * *\"", v)
			}
		}
	}
}

func scalar(v any) bool {
	switch v.(type) {
	case string, bool, int, int64, uint64, float64:
		return true
	}
	return false
}

// listOf is a list option's values: K3s takes a list or one value.
func listOf(v any) []any {
	if l, ok := v.([]any); ok {
		return l
	}
	return []any{v}
}

// suggestFlag names the closest K3s option to a mistyped one.
func suggestFlag(key string) string {
	best, bestD := "", 3
	for n := range k3sFlags {
		if d := distance(key, n); d < bestD || d == bestD && best != "" && n < best {
			best, bestD = n, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("; did you mean %s?", best)
}

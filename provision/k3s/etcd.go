package k3s

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/profiles"
)

// Paths of K3s's etcd client certificate and admin client certificate on
// a server; labctl asks etcd's gRPC gateway and the local API server with
// them, from the server itself.
const (
	etcdCA         = DataDir + "/server/tls/etcd/server-ca.crt"
	etcdClientCert = DataDir + "/server/tls/etcd/client.crt"
	etcdClientKey  = DataDir + "/server/tls/etcd/client.key"
	apiCA          = DataDir + "/server/tls/server-ca.crt"
	apiClientCert  = DataDir + "/server/tls/client-admin.crt"
	apiClientKey   = DataDir + "/server/tls/client-admin.key"
)

const (
	markMembers = "--- members"
	markStatus  = "--- status "
	markNode    = "--- node"
)

func etcdCurl(url, body string) string {
	return fmt.Sprintf("curl -sS --max-time 5 --cacert %s --cert %s --key %s -X POST %s -d '%s'", etcdCA, etcdClientCert, etcdClientKey, url, body)
}

func clientURL(address string) string {
	return "https://" + net.JoinHostPort(address, "2379")
}

// EtcdScript asks, from one server and in one command, etcd's member list
// and the status of the member at each of addresses (the profile's
// servers), each through its own client URL: a member that does not
// answer is not healthy. The questions go out at once and their answers
// are printed in order, so a dead member costs one curl timeout (5 s) in
// all, not one per question, and the statuses are of the same moment
// (right after a leader's loss, asked one by one, the first could still
// be electing while the last knew the new leader).
func EtcdScript(addresses []string) string {
	var b strings.Builder
	b.WriteString("d=$(mktemp -d) || exit 1\ntrap 'rm -rf \"$d\"' EXIT\n")
	fmt.Fprintf(&b, "%s > \"$d/members\" 2>&1 &\n", etcdCurl("https://127.0.0.1:2379/v3/cluster/member/list", "{}"))
	for i, a := range addresses {
		fmt.Fprintf(&b, "%s > \"$d/%d\" 2>&1 &\n", etcdCurl(clientURL(a)+"/v3/maintenance/status", "{}"), i)
	}
	b.WriteString("wait\n")
	fmt.Fprintf(&b, "echo '%s'; cat \"$d/members\"; echo\n", markMembers)
	for i, a := range addresses {
		fmt.Fprintf(&b, "echo '%s%s'; cat \"$d/%d\"; echo\n", markStatus, a, i)
	}
	return b.String()
}

// MemberRemoveScript removes a member through etcd's API on the server it
// runs on.
func MemberRemoveScript(m facts.Member) (string, error) {
	id, err := strconv.ParseUint(m.ID, 16, 64)
	if err != nil {
		return "", fmt.Errorf("etcd member %s: id %q: %w", m.Name, m.ID, err)
	}
	return etcdCurl("https://127.0.0.1:2379/v3/cluster/member/remove", fmt.Sprintf(`{"ID":"%d"}`, id)), nil
}

// jsonUint reads a uint64 that etcd's gateway encodes as a string (or, in
// some versions, a number).
type jsonUint uint64

func (u *jsonUint) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*u = 0
		return nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	*u = jsonUint(v)
	return err
}

func (u jsonUint) hex() string {
	if u == 0 {
		return ""
	}
	return strconv.FormatUint(uint64(u), 16)
}

type header struct {
	ClusterID jsonUint `json:"cluster_id"`
	MemberID  jsonUint `json:"member_id"`
}

// ErrEtcdUnanswered says the server's etcd did not give a member list.
var ErrEtcdUnanswered = errors.New("etcd did not answer")

// ParseEtcd reads EtcdScript's output, via the server asked.
func ParseEtcd(out, via string) (facts.Etcd, error) {
	e := facts.Etcd{Via: via}
	sections := map[string]string{}
	var order []string
	cur := ""
	for _, l := range strings.Split(out, "\n") {
		if l == markMembers || strings.HasPrefix(l, markStatus) {
			cur = l
			order = append(order, l)
			continue
		}
		if cur != "" && strings.TrimSpace(l) != "" {
			sections[cur] += l + "\n"
		}
	}
	var list struct {
		Header  header `json:"header"`
		Members []struct {
			ID         jsonUint `json:"ID"`
			Name       string   `json:"name"`
			PeerURLs   []string `json:"peerURLs"`
			ClientURLs []string `json:"clientURLs"`
			IsLearner  bool     `json:"isLearner"`
		} `json:"members"`
	}
	raw := strings.TrimSpace(sections[markMembers])
	if err := json.Unmarshal([]byte(raw), &list); err != nil || len(list.Members) == 0 {
		return e, fmt.Errorf("%s: %w: %s", via, ErrEtcdUnanswered, firstLine(raw))
	}
	e.ClusterID = list.Header.ClusterID.hex()
	for _, m := range list.Members {
		e.Members = append(e.Members, facts.Member{ID: m.ID.hex(), Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, Learner: m.IsLearner})
	}
	for _, sec := range order {
		addr, ok := strings.CutPrefix(sec, markStatus)
		if !ok {
			continue
		}
		body := strings.TrimSpace(sections[sec])
		var st struct {
			Header header   `json:"header"`
			Leader jsonUint `json:"leader"`
			DBSize jsonUint `json:"dbSize"`
		}
		err := json.Unmarshal([]byte(body), &st)
		for i := range e.Members {
			m := &e.Members[i]
			if m.Host() != addr {
				continue
			}
			switch {
			case err != nil || st.Header.MemberID == 0:
				m.Err = firstLine(body)
				if m.Err == "" {
					m.Err = "no answer"
				}
			case st.Leader == 0:
				m.Answers, m.Err = true, "answers, but knows no leader"
			default:
				m.Answers, m.Healthy = true, true
				e.Leader = st.Leader.hex()
				m.DBSize = int64(st.DBSize)
			}
		}
	}
	return e, nil
}

// MemberCheckScript asks, on node itself and in one command, etcd's
// member list and the local API server's Node object.
func MemberCheckScript(node string) string {
	return fmt.Sprintf("echo '%s'; %s 2>&1; echo\necho '%s'\ncurl -sS --max-time 10 --cacert %s --cert %s --key %s https://127.0.0.1:6443/api/v1/nodes/%s 2>&1\n",
		markMembers, etcdCurl("https://127.0.0.1:2379/v3/cluster/member/list", "{}"), markNode, apiCA, apiClientCert, apiClientKey, node)
}

// Errors of the member check, for callers that wait.
var (
	ErrNotMember    = errors.New("not a started etcd member")
	ErrNodeNotReady = errors.New("node not Ready")
)

// CheckMember reads MemberCheckScript's output for node n whose own etcd
// member name (server/db/etcd/name) is member: ready when a started,
// promoted member of that name runs at n's address and n's Node is Ready.
func CheckMember(out string, n profiles.Node, member string) error {
	members, node, _ := strings.Cut(out, markNode+"\n")
	e, err := ParseEtcd(members, n.Name)
	if err != nil {
		return fmt.Errorf("%s: %w: %w", n.Name, ErrNotMember, err)
	}
	m, ok := e.At(n.Address)
	switch {
	case !ok:
		return fmt.Errorf("%s: %w: no member at %s", n.Name, ErrNotMember, n.Address)
	case member == "" || m.Name != member:
		return fmt.Errorf("%s: %w: the member at %s is %q, this node's data is member %q", n.Name, ErrNotMember, n.Address, m.Name, member)
	case !m.Started():
		return fmt.Errorf("%s: %w: member %s added, not started", n.Name, ErrNotMember, member)
	case m.Learner:
		return fmt.Errorf("%s: %w: member %s is still a learner", n.Name, ErrNotMember, member)
	}
	kn, err := ParseNode(node)
	if err != nil {
		return fmt.Errorf("%s: %w: %w", n.Name, ErrNodeNotReady, err)
	}
	if !kn.Ready {
		return fmt.Errorf("%s: %w: %s", n.Name, ErrNodeNotReady, kn.Why)
	}
	return nil
}

// nodeJSON is the part of a Node object labctl reads.
type nodeJSON struct {
	Kind     string `json:"kind"`
	Message  string `json:"message"`
	Metadata struct {
		Name        string            `json:"name"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		Unschedulable bool `json:"unschedulable"`
	} `json:"spec"`
	Status struct {
		Conditions []struct {
			Type, Status, Reason, Message string
		} `json:"conditions"`
		Addresses []struct{ Type, Address string } `json:"addresses"`
	} `json:"status"`
}

// EtcdNodeAnnotation is K3s's annotation naming a server Node's etcd member.
const EtcdNodeAnnotation = "etcd.k3s.cattle.io/node-name"

func (o nodeJSON) fact() facts.KubeNode {
	kn := facts.KubeNode{Name: o.Metadata.Name, Unschedulable: o.Spec.Unschedulable, EtcdMember: o.Metadata.Annotations[EtcdNodeAnnotation]}
	if o.Spec.Unschedulable && o.Metadata.Annotations["labctl.dev/cordoned"] != "" {
		kn.CordonedBy = "labctl"
	}
	for l := range o.Metadata.Labels {
		if r, ok := strings.CutPrefix(l, "node-role.kubernetes.io/"); ok {
			kn.Roles = append(kn.Roles, r)
		}
	}
	slices.Sort(kn.Roles)
	for _, a := range o.Status.Addresses {
		if a.Type == "InternalIP" {
			kn.Address = a.Address
		}
	}
	kn.Why = "no Ready condition yet"
	for _, c := range o.Status.Conditions {
		if c.Type == "Ready" {
			kn.Ready = c.Status == "True"
			kn.Why = ""
			if !kn.Ready {
				kn.Why = c.Reason + ": " + c.Message
			}
		}
	}
	return kn
}

// ParseNode reads a Node object (or the API's error Status).
func ParseNode(body string) (facts.KubeNode, error) {
	var o nodeJSON
	if err := json.Unmarshal([]byte(body), &o); err != nil {
		return facts.KubeNode{}, fmt.Errorf("the API server did not answer: %s", firstLine(body))
	}
	if o.Kind != "Node" {
		return facts.KubeNode{}, errors.New(o.Message)
	}
	return o.fact(), nil
}

// NodesScript lists the cluster's Node objects through a server's local
// API server.
const NodesScript = "curl -sS --max-time 10 --cacert " + apiCA + " --cert " + apiClientCert + " --key " + apiClientKey + " https://127.0.0.1:6443/api/v1/nodes 2>&1"

// ParseNodes reads NodesScript's output.
func ParseNodes(body string) ([]facts.KubeNode, error) {
	var list struct {
		Kind    string     `json:"kind"`
		Message string     `json:"message"`
		Items   []nodeJSON `json:"items"`
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		return nil, fmt.Errorf("the API server did not answer: %s", firstLine(body))
	}
	if list.Kind != "NodeList" {
		return nil, errors.New(list.Message)
	}
	out := make([]facts.KubeNode, len(list.Items))
	for i, o := range list.Items {
		out[i] = o.fact()
	}
	return out, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// SnapshotDir is where K3s writes etcd snapshots on a server.
const SnapshotDir = DBDir + "/snapshots"

// SnapshotSaveScript takes an etcd snapshot with K3s's own command (named
// <name>-<node>-<unix time> by K3s) and prints the file it made, with its
// size.
func SnapshotSaveScript(name string) string {
	return fmt.Sprintf(`set -e
k3s etcd-snapshot save --name %[1]s
f=$(ls -1t %[2]s/%[1]s-* 2>/dev/null | head -n 1)
test -n "$f" || { echo "no snapshot %[1]s-* in %[2]s after k3s etcd-snapshot save" >&2; exit 1; }
echo "snapshot=$f"
echo "size=$(stat -c %%s "$f")"`, name, SnapshotDir)
}

// ParseSnapshotSaved reads SnapshotSaveScript's output.
func ParseSnapshotSaved(out, name string) (facts.Snapshot, error) {
	var s facts.Snapshot
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "snapshot="); ok {
			s.Path = strings.TrimSpace(v)
			s.Name = s.Path[strings.LastIndex(s.Path, "/")+1:]
		}
		if v, ok := strings.CutPrefix(l, "size="); ok {
			s.Size, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	if s.Path == "" || !strings.HasPrefix(s.Name, name+"-") || s.Size <= 0 {
		return s, fmt.Errorf("etcd snapshot %s: unexpected output %q", name, firstLine(out))
	}
	return s, nil
}

// ClusterResetScript resets etcd's membership to this server, restoring
// restorePath (an etcd snapshot on the server) when given, with K3s's own
// flags; K3s exits when done.
func ClusterResetScript(restorePath string) string {
	s := "k3s server --cluster-reset"
	if restorePath != "" {
		s += " --cluster-reset-restore-path=" + shq(restorePath)
	}
	return s
}

// MoveServerDBScript moves a server's etcd data aside with the time in
// its name: K3s's restore asks for it to be backed up and removed on
// every server that rejoins. When DBDir is the bind mount of etcd's own
// disk (its fstab line), the data moves aside on that disk, beside the
// mount's source, and DBDir stays mounted (a mount point cannot move).
const MoveServerDBScript = `set -e
ts=$(date +%Y%m%d-%H%M%S)
src=$(awk '$2 == "` + DBDir + `" && $3 == "none" { print $1 }' /etc/fstab 2>/dev/null)
if [ -n "$src" ] && mountpoint -q ` + DBDir + `; then
  mkdir -p "$src-before-restore-$ts"
  find "$src" -mindepth 1 -maxdepth 1 -exec mv -t "$src-before-restore-$ts" {} +
elif [ -d ` + DBDir + ` ]; then
  mv ` + DBDir + ` ` + DBDir + `-before-restore-$ts
fi`

// SnapshotListScript lists a server's snapshot files: name, size and
// modification time, one per line.
const SnapshotListScript = `cd ` + SnapshotDir + ` 2>/dev/null || exit 0
for f in *; do [ -f "$f" ] && echo "$f $(stat -c '%s %Y' "$f")"; done; true`

// ParseSnapshotList reads SnapshotListScript's output.
func ParseSnapshotList(out string) []facts.Snapshot {
	var snaps []facts.Snapshot
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) != 3 || f[0] == "*" {
			continue
		}
		size, _ := strconv.ParseInt(f[1], 10, 64)
		unix, _ := strconv.ParseInt(f[2], 10, 64)
		snaps = append(snaps, facts.Snapshot{Name: f[0], Path: SnapshotDir + "/" + f[0], Size: size, Taken: time.Unix(unix, 0).UTC()})
	}
	return snaps
}

// ShellQuote quotes a word for /bin/sh.
func ShellQuote(s string) string { return shq(s) }

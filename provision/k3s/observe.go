package k3s

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/profiles"
)

// Paths of K3s's server state on a node.
const (
	DataDir = "/var/lib/rancher/k3s"
	// DBDir holds etcd's data (DBDir/etcd) and K3s's reset flag.
	DBDir = DataDir + "/server/db"
	// MemberNameFile is where K3s keeps the node's etcd member name.
	MemberNameFile = DBDir + "/etcd/name"
	serverCA       = DataDir + "/server/tls/server-ca.crt"
)

// ObserveScript prints, read-only, what a node runs of K3s, one key=value
// per line: binary and version, unit and its state, server data and the
// CA it belongs to, the token file's hash, the etcd member name and the
// config file (base64).
const ObserveScript = `b=$(command -v k3s || echo ` + BinaryPath + `)
if [ -x "$b" ]; then echo binary=yes; echo "version=$("$b" --version 2>/dev/null | head -n 1)"; else echo binary=no; fi
for u in k3s k3s-agent; do
  if [ -f /etc/systemd/system/$u.service ]; then echo "unit=$u"; echo "active=$(systemctl is-active $u 2>/dev/null)"; fi
done
if [ -d ` + DBDir + `/etcd/member ]; then echo data=yes; else echo data=no; fi
if [ -f ` + MemberNameFile + ` ]; then echo "member=$(cat ` + MemberNameFile + `)"; fi
if [ -f ` + serverCA + ` ]; then echo "ca=$(sha256sum < ` + serverCA + ` | cut -d' ' -f1)"; fi
if [ -f ` + TokenPath + ` ]; then echo "token=$(sha256sum < ` + TokenPath + ` | cut -d' ' -f1)"; fi
if [ -f ` + ConfigPath + ` ]; then echo "config=$(base64 -w0 < ` + ConfigPath + `)"; fi`

// TokenHash is how ObserveScript shows the token file holding token.
func TokenHash(token string) string {
	sum := sha256.Sum256([]byte(token + "\n"))
	return hex.EncodeToString(sum[:])
}

// ParseObservation reads ObserveScript's output; tokenHash is the hash of
// the profile's cluster token ("" when there is none yet).
func ParseObservation(out, tokenHash string) (facts.K3s, error) {
	f := map[string]string{}
	unit, active := "", ""
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "unit":
			if unit == "" || v == "k3s" {
				unit = v
			}
		case "active":
			if active != "active" {
				active = v
			}
		default:
			f[k] = v
		}
	}
	if f["binary"] == "" || f["data"] == "" {
		return facts.K3s{}, fmt.Errorf("observe K3s: unexpected output %q", firstLine(out))
	}
	k := facts.K3s{
		Installed: f["binary"] == "yes" && unit != "",
		Unit:      unit,
		Active:    active == "active",
		HasData:   f["data"] == "yes",
		CAHash:    f["ca"],
		Member:    f["member"],
	}
	k.TokenMatches = tokenHash != "" && f["token"] == tokenHash
	if fields := strings.Fields(f["version"]); len(fields) >= 3 && fields[0] == "k3s" && fields[1] == "version" {
		k.Version = fields[2]
	}
	if c, ok := f["config"]; ok {
		b, err := base64.StdEncoding.DecodeString(c)
		if err != nil {
			return k, fmt.Errorf("observe K3s: %s: %w", ConfigPath, err)
		}
		k.Config = b
	}
	return k, nil
}

// joinKeys are the config keys chosen when a node is installed (which
// server it joined, or that it initialised the cluster); they are not
// drift once the node is a member.
var joinKeys = []string{"cluster-init", "server"}

// Drift lists how node n's K3s differs from the profile: the installed
// version and every config.yaml key other than the join keys. A node
// without K3s has no drift (it is simply not installed).
func Drift(s *profiles.Spec, n profiles.Node, k facts.K3s) []facts.Change {
	if !k.Installed {
		return nil
	}
	var out []facts.Change
	if k.Version != s.K3s.Version {
		out = append(out, facts.Change{Key: "k3s version", Have: k.Version, Want: s.K3s.Version})
	}
	return append(out, ConfigDrift(k.Config, NodeConfig(s, n, nil))...)
}

// ConfigDrift compares a config.yaml on disk with the one labctl renders,
// key by key, join keys aside.
func ConfigDrift(onDisk []byte, want Config) []facts.Change {
	if onDisk == nil {
		return []facts.Change{{Key: ConfigPath, Have: "(missing)", Want: "as rendered"}}
	}
	have := map[string]any{}
	if err := yaml.Unmarshal(onDisk, &have); err != nil {
		return []facts.Change{{Key: ConfigPath, Have: "unreadable: " + err.Error(), Want: "as rendered"}}
	}
	wantMap := map[string]any{}
	_ = yaml.Unmarshal(want.Render(), &wantMap)
	keys := map[string]bool{}
	for k := range have {
		keys[k] = true
	}
	for k := range wantMap {
		keys[k] = true
	}
	var sorted []string
	for k := range keys {
		if !slices.Contains(joinKeys, k) {
			sorted = append(sorted, k)
		}
	}
	slices.Sort(sorted)
	var out []facts.Change
	for _, k := range sorted {
		h, w := renderValue(have[k]), renderValue(wantMap[k])
		if h != w {
			out = append(out, facts.Change{Key: k, Have: h, Want: w})
		}
	}
	return out
}

func renderValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "(unset)"
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = fmt.Sprint(e)
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	return fmt.Sprint(v)
}

// Critical are the config.yaml keys K3s requires to be equal on every
// server: changing them is a new cluster, not an upgrade.
var Critical = profiles.K3sCritical

// JoinOf reads how a node's config.yaml joined the cluster: with
// cluster-init, or through server (a URL).
func JoinOf(onDisk []byte) (clusterInit bool, server string) {
	var m struct {
		ClusterInit bool   `yaml:"cluster-init"`
		Server      string `yaml:"server"`
	}
	_ = yaml.Unmarshal(onDisk, &m)
	return m.ClusterInit, m.Server
}

package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

const configFile = "/etc/rancher/k3s/config.yaml"

// config is the subset of K3s server options the stand-in honours.
type config struct {
	ClusterInit         bool
	Server              string
	Token               string
	TokenFile           string
	NodeName            string
	NodeIP              string
	AdvertiseAddress    string
	TLSSAN              []string
	ClusterCIDR         string
	ServiceCIDR         string
	Disable             []string
	WriteKubeconfigMode string
	DataDir             string
	// DisableHelmController is a critical setting (compared on join);
	// the stand-in has no Helm controller to disable.
	DisableHelmController bool
	// KubeletArgs (name=value), NodeLabels and NodeTaints reach the
	// kubelet as K3s passes them.
	KubeletArgs []string
	NodeLabels  []string
	NodeTaints  []string
	// ClusterReset and ClusterResetRestorePath: K3s's --cluster-reset
	// and --cluster-reset-restore-path (command line only, as labctl runs
	// them).
	ClusterReset            bool
	ClusterResetRestorePath string
}

type listFlag struct{ v *[]string }

func (l listFlag) String() string     { return "" }
func (l listFlag) Set(s string) error { *l.v = append(*l.v, strings.Split(s, ",")...); return nil }

// loadConfig reads the config file (K3S_CONFIG_FILE or the default), then
// the command line, which wins, like K3s.
func loadConfig(args []string) (*config, error) {
	c := &config{ClusterCIDR: "10.42.0.0/16", ServiceCIDR: "10.43.0.0/16", WriteKubeconfigMode: "0600", DataDir: "/var/lib/rancher/k3s"}
	path := os.Getenv("K3S_CONFIG_FILE")
	if path == "" {
		path = configFile
	}
	if b, err := os.ReadFile(path); err == nil {
		if err := c.applyFile(b); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.BoolVar(&c.ClusterInit, "cluster-init", c.ClusterInit, "")
	fs.StringVar(&c.Server, "server", c.Server, "")
	fs.StringVar(&c.Token, "token", c.Token, "")
	fs.StringVar(&c.TokenFile, "token-file", c.TokenFile, "")
	fs.StringVar(&c.NodeName, "node-name", c.NodeName, "")
	fs.StringVar(&c.NodeIP, "node-ip", c.NodeIP, "")
	fs.StringVar(&c.AdvertiseAddress, "advertise-address", c.AdvertiseAddress, "")
	fs.Var(listFlag{&c.TLSSAN}, "tls-san", "")
	fs.StringVar(&c.ClusterCIDR, "cluster-cidr", c.ClusterCIDR, "")
	fs.StringVar(&c.ServiceCIDR, "service-cidr", c.ServiceCIDR, "")
	fs.Var(listFlag{&c.Disable}, "disable", "")
	fs.StringVar(&c.WriteKubeconfigMode, "write-kubeconfig-mode", c.WriteKubeconfigMode, "")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "")
	fs.BoolVar(&c.DisableHelmController, "disable-helm-controller", c.DisableHelmController, "")
	fs.Var(listFlag{&c.KubeletArgs}, "kubelet-arg", "")
	fs.Var(listFlag{&c.NodeLabels}, "node-label", "")
	fs.Var(listFlag{&c.NodeTaints}, "node-taint", "")
	fs.BoolVar(&c.ClusterReset, "cluster-reset", false, "")
	fs.StringVar(&c.ClusterResetRestorePath, "cluster-reset-restore-path", "", "")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if c.Token == "" {
		c.Token = os.Getenv("K3S_TOKEN")
	}
	if c.Server == "" {
		c.Server = os.Getenv("K3S_URL")
	}
	if c.Token == "" && c.TokenFile != "" {
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("token-file: %w", err)
		}
		c.Token = strings.TrimSpace(string(b))
	}
	if c.NodeName == "" {
		c.NodeName, _ = os.Hostname()
	}
	if c.NodeIP == "" {
		ip, err := defaultIP()
		if err != nil {
			return nil, err
		}
		c.NodeIP = ip
	}
	if c.AdvertiseAddress == "" {
		c.AdvertiseAddress = c.NodeIP
	}
	sort.Strings(c.Disable)
	return c, nil
}

// applyFile sets options from config.yaml; like K3s, an unknown key is an
// error rather than silently ignored.
func (c *config) applyFile(b []byte) error {
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return err
	}
	str := func(v any) string { return fmt.Sprint(v) }
	list := func(v any) []string {
		switch x := v.(type) {
		case []any:
			var out []string
			for _, e := range x {
				out = append(out, str(e))
			}
			return out
		default:
			return strings.Split(str(v), ",")
		}
	}
	for k, v := range m {
		switch k {
		case "cluster-init":
			c.ClusterInit, _ = strconv.ParseBool(str(v))
		case "server":
			c.Server = str(v)
		case "token":
			c.Token = str(v)
		case "token-file":
			c.TokenFile = str(v)
		case "node-name":
			c.NodeName = str(v)
		case "node-ip":
			c.NodeIP = str(v)
		case "advertise-address":
			c.AdvertiseAddress = str(v)
		case "tls-san":
			c.TLSSAN = list(v)
		case "cluster-cidr":
			c.ClusterCIDR = str(v)
		case "service-cidr":
			c.ServiceCIDR = str(v)
		case "disable":
			c.Disable = list(v)
		case "write-kubeconfig-mode":
			c.WriteKubeconfigMode = str(v)
		case "data-dir":
			c.DataDir = str(v)
		case "disable-helm-controller":
			c.DisableHelmController, _ = strconv.ParseBool(str(v))
		case "kubelet-arg":
			c.KubeletArgs = list(v)
		case "node-label":
			c.NodeLabels = list(v)
		case "node-taint":
			c.NodeTaints = list(v)
		default:
			// K3s knows more options; the stand-in refuses what it does
			// not model rather than ignore it.
			return fmt.Errorf("unknown option %q", k)
		}
	}
	return nil
}

// critical are the settings every server must share.
func (c *config) critical() string {
	s := fmt.Sprintf("cluster-cidr=%s service-cidr=%s disable=%s", c.ClusterCIDR, c.ServiceCIDR, strings.Join(c.Disable, ","))
	if c.DisableHelmController {
		s += " disable-helm-controller=true"
	}
	return s
}

func nowString() string { return time.Now().UTC().Format(time.RFC3339) }

// defaultIP is the node's address when node-ip is not given: the first
// IPv4 address of an interface that is up and not a loopback or a bridge
// the node made itself (K3s takes the default route's interface).
func defaultIP() (string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	for _, i := range ifs {
		if i.Flags&net.FlagUp == 0 || i.Flags&net.FlagLoopback != 0 || strings.HasPrefix(i.Name, "cni") || strings.HasPrefix(i.Name, "veth") || strings.HasPrefix(i.Name, "docker") {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				return n.IP.String(), nil
			}
		}
	}
	return "", fmt.Errorf("no node-ip given and no IPv4 address found")
}

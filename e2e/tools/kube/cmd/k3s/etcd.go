package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// startEtcd starts the embedded etcd member: a new single-member cluster,
// or, with join, a learner added to the cluster and promoted once it has
// caught up.
func startEtcd(ctx context.Context, s *server, join *bootstrap) (*embed.Etcd, error) {
	dir := filepath.Join(s.dir, "db", "etcd")
	// Where K3s keeps the member name: server/db/etcd/name.
	nameFile := filepath.Join(s.dir, "db", "etcd", "name")
	name := ""
	if b, err := os.ReadFile(nameFile); err == nil {
		name = string(b)
	} else {
		// K3s names members <node-name>-<random suffix>.
		name = fmt.Sprintf("%s-%08x", s.c.NodeName, time.Now().UnixNano()&0xffffffff)
	}
	peer := "https://" + s.c.NodeIP + ":2380"
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dir
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{filepath.Join(s.dir, "db", "etcd.log")}
	mustURL := func(u string) url.URL { p, _ := url.Parse(u); return *p }
	cfg.ListenClientUrls = []url.URL{mustURL("https://127.0.0.1:2379"), mustURL("https://" + s.c.NodeIP + ":2379")}
	cfg.AdvertiseClientUrls = []url.URL{mustURL("https://" + s.c.NodeIP + ":2379")}
	cfg.ListenPeerUrls = []url.URL{mustURL(peer)}
	// K3s's etcd serves its metrics on 127.0.0.1:2381 (etcd-expose-metrics
	// moves them to the node address).
	cfg.ListenMetricsUrls = []url.URL{mustURL("http://127.0.0.1:2381")}
	cfg.AdvertisePeerUrls = []url.URL{mustURL(peer)}
	tlsInfo := func() (ti struct{ cert, key, ca string }) {
		return struct{ cert, key, ca string }{s.pki.path("etcd.crt"), s.pki.path("etcd.key"), s.pki.path("server-ca.crt")}
	}()
	cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile, cfg.ClientTLSInfo.TrustedCAFile = tlsInfo.cert, tlsInfo.key, tlsInfo.ca
	cfg.ClientTLSInfo.ClientCertAuth = true
	cfg.PeerTLSInfo.CertFile, cfg.PeerTLSInfo.KeyFile, cfg.PeerTLSInfo.TrustedCAFile = tlsInfo.cert, tlsInfo.key, tlsInfo.ca
	cfg.PeerTLSInfo.ClientCertAuth = true
	cfg.InitialCluster = name + "=" + peer
	cfg.InitialClusterToken = "k3s-standin"

	_, dataErr := os.Stat(filepath.Join(dir, "member"))
	var promote func() error
	if join != nil && os.IsNotExist(dataErr) {
		cli, err := etcdClient(s, join.EtcdEndpoints)
		if err != nil {
			return nil, err
		}
		defer cli.Close()
		logf("level=info msg=%q", fmt.Sprintf("Adding member %s=%s to etcd cluster", name, peer))
		// etcd itself refuses a peer URL that is still a member:
		// "etcdserver: Peer URLs already exists". Right after another
		// member joined it also refuses for a few seconds with "unhealthy
		// cluster" (strict reconfiguration check); K3s gets past that by
		// being restarted, the stand-in by retrying, for at most a minute.
		var resp *clientv3.MemberAddResponse
		for deadline := time.Now().Add(time.Minute); ; {
			actx, cancel := context.WithTimeout(ctx, 30*time.Second)
			resp, err = cli.MemberAddAsLearner(actx, []string{peer})
			cancel()
			if err == nil || !strings.Contains(err.Error(), "unhealthy cluster") || time.Now().After(deadline) {
				break
			}
			logf("level=info msg=%q", "etcd cluster not ready for a new member yet; retrying")
			time.Sleep(2 * time.Second)
		}
		if err != nil {
			return nil, fmt.Errorf("failed to join etcd cluster: %w", err)
		}
		var initial []string
		for _, m := range resp.Members {
			n := m.Name
			if m.ID == resp.Member.ID {
				n = name
			}
			for _, p := range m.PeerURLs {
				initial = append(initial, n+"="+p)
			}
		}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.ClusterState = embed.ClusterStateFlagExisting
		id := resp.Member.ID
		promote = func() error {
			cli, err := etcdClient(s, join.EtcdEndpoints)
			if err != nil {
				return err
			}
			defer cli.Close()
			for i := 0; i < 120; i++ {
				pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err = cli.MemberPromote(pctx, id)
				cancel()
				if err == nil {
					logf("level=info msg=%q", "Promoted etcd learner "+name)
					return nil
				}
				time.Sleep(time.Second)
			}
			return fmt.Errorf("promote etcd learner %s: %w", name, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(nameFile), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(nameFile, []byte(name), 0o600); err != nil {
		return nil, err
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(2 * time.Minute):
		e.Close()
		return nil, fmt.Errorf("etcd member %s not ready after 2m (log: %s)", name, cfg.LogOutputs[0])
	}
	if promote != nil {
		if err := promote(); err != nil {
			e.Close()
			return nil, err
		}
	}
	logf("level=info msg=%q", "etcd member "+name+" ready")
	return e, nil
}

// etcdClient connects with this server's etcd certificate.
func etcdClient(s *server, endpoints []string) (*clientv3.Client, error) {
	cert, err := tls.LoadX509KeyPair(s.pki.path("etcd.crt"), s.pki.path("etcd.key"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(s.pki.caCert)
	return clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 10 * time.Second,
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool}})
}

// writeKubeconfig writes a kubeconfig with embedded certificates.
func writeKubeconfig(path, server, ca, cert, key string, mode os.FileMode) error {
	read := func(p string) (string, error) {
		b, err := os.ReadFile(p)
		return base64.StdEncoding.EncodeToString(b), err
	}
	caB, err := read(ca)
	if err != nil {
		return err
	}
	certB, err := read(cert)
	if err != nil {
		return err
	}
	keyB, err := read(key)
	if err != nil {
		return err
	}
	text := fmt.Sprintf(`apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: %s
    server: %s
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: %s
    client-key-data: %s
`, caB, server, certB, keyB)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// resetEtcd is `k3s server --cluster-reset [--cluster-reset-restore-path
// P]` on a stopped server: etcd's membership is reset to this server
// alone, from the snapshot file P when given (restored into a new data
// directory that takes the old one's place, the old one kept aside), and
// K3s's reset flag file is written; then it exits, as K3s does, asking
// for a restart without the flag.
func resetEtcd(ctx context.Context, s *server) error {
	db := filepath.Join(s.dir, "db")
	dir := filepath.Join(db, "etcd")
	nameFile := filepath.Join(dir, "name")
	name := ""
	if b, err := os.ReadFile(nameFile); err == nil {
		name = string(b)
	} else {
		name = fmt.Sprintf("%s-%08x", s.c.NodeName, time.Now().UnixNano()&0xffffffff)
	}
	peer := "https://" + s.c.NodeIP + ":2380"
	if p := s.c.ClusterResetRestorePath; p != "" {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("etcd: snapshot restore: %w", err)
		}
		tmp := filepath.Join(db, "etcd-restore")
		_ = os.RemoveAll(tmp)
		logf("level=info msg=%q", "Pre-restore etcd database moved to "+dir+"-old-"+fmt.Sprint(time.Now().Unix()))
		err := snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
			SnapshotPath: p, Name: name, OutputDataDir: tmp, PeerURLs: []string{peer},
			InitialCluster: name + "=" + peer, InitialClusterToken: "k3s-standin", SkipHashCheck: true,
		})
		if err != nil {
			return fmt.Errorf("etcd: snapshot restore failed: %w", err)
		}
		if _, err := os.Stat(dir); err == nil {
			if err := os.Rename(dir, fmt.Sprintf("%s-old-%d", dir, time.Now().Unix())); err != nil {
				return err
			}
		}
		if err := os.Rename(tmp, dir); err != nil {
			return err
		}
		if err := os.WriteFile(nameFile, []byte(name), 0o600); err != nil {
			return err
		}
		logf("level=info msg=%q", "etcd: restored snapshot "+p)
	} else {
		// Membership reset in place: etcd's force-new-cluster.
		cfg := embed.NewConfig()
		cfg.Name, cfg.Dir, cfg.LogLevel = name, dir, "warn"
		cfg.LogOutputs = []string{filepath.Join(db, "etcd.log")}
		mustURL := func(u string) url.URL { p, _ := url.Parse(u); return *p }
		cfg.ListenClientUrls = []url.URL{mustURL("https://127.0.0.1:2379")}
		cfg.AdvertiseClientUrls = []url.URL{mustURL("https://127.0.0.1:2379")}
		cfg.ListenPeerUrls = []url.URL{mustURL(peer)}
		cfg.AdvertisePeerUrls = []url.URL{mustURL(peer)}
		cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile, cfg.ClientTLSInfo.TrustedCAFile = s.pki.path("etcd.crt"), s.pki.path("etcd.key"), s.pki.path("server-ca.crt")
		cfg.PeerTLSInfo = cfg.ClientTLSInfo
		cfg.InitialCluster = name + "=" + peer
		cfg.ForceNewCluster = true
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			return fmt.Errorf("etcd: cluster reset: %w", err)
		}
		select {
		case <-e.Server.ReadyNotify():
		case <-time.After(2 * time.Minute):
		case <-ctx.Done():
		}
		e.Close()
	}
	if err := os.WriteFile(filepath.Join(db, "reset-flag"), nil, 0o600); err != nil {
		return err
	}
	logf("level=info msg=%q", "Managed etcd cluster membership has been reset, restart without --cluster-reset flag now. Backup and delete ${datadir}/server/db on each peer etcd server and rejoin the nodes")
	return nil
}

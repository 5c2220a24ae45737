package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// runSnapshot is `k3s etcd-snapshot save|ls|delete`, as K3s has it for a
// local server: save asks the running server's etcd (through its client
// certificate, as K3s's CLI does through the server) for a snapshot and
// writes it to <data-dir>/server/db/snapshots/<name>-<node>-<unix time>;
// ls lists that directory; delete removes the named files.
func runSnapshot(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: k3s etcd-snapshot save|ls|delete")
	}
	c, err := loadConfig(nil)
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("etcd-snapshot", flag.ContinueOnError)
	name := fs.String("name", "on-demand", "")
	dataDir := fs.String("data-dir", c.DataDir, "")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	dir := filepath.Join(*dataDir, "server", "db", "snapshots")
	switch args[0] {
	case "save":
		return saveSnapshot(ctx, *dataDir, dir, *name, c.NodeName)
	case "ls", "list":
		entries, err := os.ReadDir(dir)
		if err != nil && !os.IsNotExist(err) {
			return err
		}
		fmt.Printf("%-60s %-70s %-10s %s\n", "Name", "Location", "Size", "Created")
		sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
		for _, e := range entries {
			st, err := e.Info()
			if err != nil {
				continue
			}
			fmt.Printf("%-60s %-70s %-10d %s\n", e.Name(), "file://"+filepath.Join(dir, e.Name()), st.Size(), st.ModTime().UTC().Format(time.RFC3339))
		}
		return nil
	case "delete", "rm":
		for _, n := range fs.Args() {
			if strings.Contains(n, "/") {
				return fmt.Errorf("snapshot %q: a name, not a path", n)
			}
			if err := os.Remove(filepath.Join(dir, n)); err != nil {
				return err
			}
			logf("level=info msg=%q", "Snapshot "+n+" deleted.")
		}
		return nil
	}
	return fmt.Errorf("etcd-snapshot: unknown subcommand %q", args[0])
}

func saveSnapshot(ctx context.Context, dataDir, dir, name, node string) error {
	tlsDir := filepath.Join(dataDir, "server", "tls")
	cert, err := tls.LoadX509KeyPair(filepath.Join(tlsDir, "etcd", "client.crt"), filepath.Join(tlsDir, "etcd", "client.key"))
	if err != nil {
		return fmt.Errorf("etcd-snapshot: this is not a server with etcd data: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(tlsDir, "etcd", "server-ca.crt"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"https://127.0.0.1:2379"}, DialTimeout: 10 * time.Second,
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool}})
	if err != nil {
		return err
	}
	defer cli.Close()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// As K3s: a learner cannot take a snapshot.
	st, err := cli.Status(sctx, "https://127.0.0.1:2379")
	if err != nil {
		return fmt.Errorf("failed to check etcd status for snapshot: %w", err)
	}
	if st.IsLearner {
		return fmt.Errorf("unable to take snapshot: not supported for learner")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	file := fmt.Sprintf("%s-%s-%d", name, node, time.Now().Unix())
	path := filepath.Join(dir, file)
	logf("level=info msg=%q", "Saving etcd snapshot to "+path)
	rc, err := cli.Snapshot(sctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	tmp := path + ".part"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, rc); err != nil {
		_ = f.Close()
		_ = os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	logf("level=info msg=%q", "Snapshot "+file+" saved.")
	return nil
}

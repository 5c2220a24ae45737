//go:build e2e

// Package e2e holds labctl's Docker-based end-to-end tests. They run on
// the offline test bed (e2e/testbed): `make e2e`, as root.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/labctl/labctl/e2e/testbed"
	"github.com/labctl/labctl/provision/remote"
)

// bed is shared by the package's tests; each test starts its own nodes
// (own names, own addresses: TestGivenHosts and the production scenario
// run in parallel).
var bed *testbed.Bed

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	var err error
	bed, err = testbed.New(ctx, testbed.Options{
		Name: "labctl-e2e", Subnet: "172.30.20.0/24",
		Log: func(f string, a ...any) { fmt.Printf("bed: "+f+"\n", a...) },
	})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "test bed:", err)
		os.Exit(1)
	}
	// The fixture's secrets for Flux, seeded by the production and the
	// k3d Flux scenarios, and the k3d one's Git token (fixed, not secrets;
	// os.Setenv since the scenarios run in parallel, where t.Setenv is
	// refused).
	_ = os.Setenv("CLOUDFLARE_API_TOKEN", "e2e-cloudflare-not-a-token")
	_ = os.Setenv("SOPS_AGE_KEY", "AGE-SECRET-KEY-E2E-NOT-A-KEY")
	_ = os.Setenv("LABCTL_E2E_GIT_TOKEN", "e2e-token-not-a-secret")
	code := m.Run()
	bed.Close()
	os.Exit(code)
}

// measuring reports whether the speed comparisons run
// (LABCTL_E2E_BENCH=1, `make e2e-bench`): a raw k3d create beside
// labctl's, the Flux chain with labctl's reconcile requests off and on.
// They are measurements, not checks, so CI's `make e2e` leaves them out.
func measuring(t *testing.T, what string) bool {
	if os.Getenv("LABCTL_E2E_BENCH") == "1" {
		return true
	}
	t.Logf("not measured (LABCTL_E2E_BENCH=1 or make e2e-bench measures it): %s", what)
	return false
}

// knownHosts writes the bed's current host keys to a file for a test.
func knownHosts(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(p, bed.KnownHosts(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// sshConfig is how labctl would reach a bed node as user.
func sshConfig(t *testing.T, n *testbed.Node, user string) remote.Config {
	return remote.Config{
		Name: n.Name, Address: n.IP, User: user,
		IdentityFiles:  []string{bed.KeyFile},
		KnownHostsFile: knownHosts(t),
		ConnectTimeout: 5 * time.Second,
	}
}

package k3d

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/k3d-io/k3d/v5/pkg/runtimes/docker"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/internal/sshdtest"
	"github.com/labctl/labctl/profiles"
)

// fakeDockerEnv makes this test binary the remote `docker system
// dial-stdio`: it joins its standard streams to the Docker API socket
// named in the variable, as the real command does.
const fakeDockerEnv = "LABCTL_TEST_DOCKER_SOCKET"

func TestMain(m *testing.M) {
	if sock := os.Getenv(fakeDockerEnv); sock != "" {
		c, err := net.Dial("unix", sock)
		if err != nil {
			os.Exit(1)
		}
		go func() { _, _ = io.Copy(c, os.Stdin); _ = c.(*net.UnixConn).CloseWrite() }()
		_, _ = io.Copy(os.Stdout, c)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// dockerAPI answers the calls a client makes first, as a Docker daemon.
func dockerAPI(t *testing.T) string {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Api-Version", "1.47")
		switch {
		case strings.HasSuffix(r.URL.Path, "/_ping"):
			_, _ = io.WriteString(w, "OK")
		case strings.HasSuffix(r.URL.Path, "/version"):
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"Version":"27.5.0","ApiVersion":"1.47","Os":"linux"}`)
		default:
			http.NotFound(w, r)
		}
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return sock
}

// A Docker host over SSH, the way Docker's CLI reaches one (its helper
// runs the system ssh with `docker system dial-stdio`), against a real
// sshd: the host key is checked against the profile's known_hosts and
// never accepted on first use, and each way the host can fail is named
// with its fix.
func TestSSHDockerHostChecksTheHostKeyAndNamesEachFailure(t *testing.T) {
	if _, err := os.Stat("/usr/bin/ssh"); err != nil {
		t.Fatalf("this test needs OpenSSH's client (apt-get install openssh-client): %v", err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sock := dockerAPI(t)
	bin := t.TempDir()
	mode := filepath.Join(bin, "mode")
	// The remote `docker`: the real dial-stdio, or one of the failures
	// Docker prints, as mode says; with mode "absent" there is none.
	script := `#!/bin/sh
case "$(cat ` + mode + `)" in
absent) echo "sh: 1: docker: not found" >&2; exit 127 ;;
denied) echo "permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock: Get \"http://%2Fvar%2Frun%2Fdocker.sock/_ping\": dial unix /var/run/docker.sock: connect: permission denied" >&2; exit 1 ;;
stopped) echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2; exit 1 ;;
esac
[ "$1 $2" = "system dial-stdio" ] || { echo "unexpected docker $*" >&2; exit 2; }
` + fakeDockerEnv + `=` + sock + ` exec ` + self + "\n"
	if err := os.WriteFile(filepath.Join(bin, "docker"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	srv := sshdtest.New(t, sshdtest.Options{Extra: "SetEnv PATH=" + bin + ":/usr/bin:/bin\n"}).Start()
	kh := filepath.Join(t.TempDir(), "known_hosts")
	spec := func() *profiles.Spec {
		return &profiles.Spec{K3d: &profiles.K3d{DockerHost: (&url.URL{Scheme: "ssh", User: url.User(srv.User), Host: srv.Addr}).String()},
			SSH: &profiles.SSH{KnownHostsFile: kh, IdentityFiles: []string{srv.KeyFile}}}
	}
	ping := func(m string) error {
		t.Helper()
		if err := os.WriteFile(mode, []byte(m), 0o644); err != nil {
			t.Fatal(err)
		}
		b := &Backend{Spec: spec()}
		return b.withDocker(func() error {
			c, err := docker.GetDockerClient()
			if err != nil {
				return err
			}
			defer func() { _ = c.Close() }()
			v, err := c.ServerVersion(context.Background())
			if err == nil && v.Version != "27.5.0" {
				return errors.New("unexpected version " + v.Version)
			}
			return err
		})
	}

	// No known_hosts file at all, then one without this host.
	if err := ping("ok"); err == nil || !strings.Contains(err.Error(), "the Docker host's key is checked against "+kh) {
		t.Errorf("no known_hosts: %v", err)
	}
	if err := os.WriteFile(kh, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	before := srv.Accepted()
	err = ping("ok")
	if !errors.Is(err, ErrDockerHost) || !strings.Contains(err.Error(), "is not the one in the profile's known_hosts") {
		t.Errorf("unknown host key: %v", err)
	}
	if b, _ := os.ReadFile(kh); len(b) != 0 || srv.Accepted() != before {
		t.Errorf("an unknown host key was accepted or a session opened: known_hosts %q", b)
	}
	if err := os.WriteFile(kh, []byte(srv.KnownHostsLine(srv.HostKey)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ping("ok"); err != nil {
		t.Fatalf("the Docker API through ssh with the known key: %v", err)
	}
	// What verify reads of the host over the same SSH: the data root's
	// disk and the inotify limits.
	var d facts.DockerHost
	if err := remoteHostFacts(context.Background(), spec(), bin, &d); err != nil || d.SizeKB <= 0 || d.FreeKB <= 0 || d.InotifyWatches <= 0 || d.InotifyInstances <= 0 {
		t.Errorf("the Docker host's disk and inotify over SSH: %+v %v", d, err)
	}
	for _, tc := range []struct{ mode, want string }{
		{"absent", "has no docker CLI in " + srv.User + "'s PATH: install Docker there"},
		{"denied", "may not use Docker on " + srv.Addr + ": add it to the docker group (usermod -aG docker " + srv.User + ")"},
		{"stopped", "Docker does not run on " + srv.Addr + ": start it there"},
	} {
		err := ping(tc.mode)
		if !errors.Is(err, ErrDockerHost) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.mode, err)
		}
		t.Logf("%s: %v", tc.mode, err)
	}
	// Another key at that address (a reinstalled host): refused.
	other := sshdtest.New(t, sshdtest.Options{})
	if err := os.WriteFile(kh, []byte(srv.KnownHostsLine(other.HostKey)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ping("ok"); !errors.Is(err, ErrDockerHost) || !strings.Contains(err.Error(), "is not the one in the profile's known_hosts") {
		t.Errorf("changed host key: %v", err)
	}
}

package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Ctrl-C while an SSH handshake hangs (a host that accepts TCP and never
// speaks) stops labctl at once, not after the connect timeout.
func TestInterruptStopsAHangingHandshake(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	listeners := []net.Listener{l}
	for _, a := range []string{"127.0.0.2", "127.0.0.3"} {
		more, err := net.Listen("tcp", net.JoinHostPort(a, port))
		if err != nil {
			t.Fatal(err)
		}
		listeners = append(listeners, more)
	}
	var conns sync.WaitGroup
	for _, l := range listeners {
		defer func() { _ = l.Close() }()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				conns.Add(1)
				go func() { defer conns.Done(); defer func() { _ = c.Close() }(); time.Sleep(time.Minute) }()
			}
		}()
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "labctl")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v %s", err, out)
	}
	key := filepath.Join(dir, "id")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	profile := filepath.Join(dir, "mute.yaml")
	text := fmt.Sprintf(`apiVersion: labctl.dev/v1alpha1
kind: Profile
metadata: {name: mute}
extends: production
spec:
  proxmox: null
  network: {subnet: 127.0.0.0/24, gateway: 127.0.0.254}
  nodes:
    - {name: kube-srv-1, address: 127.0.0.1, role: server}
    - {name: kube-srv-2, address: 127.0.0.2, role: server}
    - {name: kube-srv-3, address: 127.0.0.3, role: server}
  ssh: {user: ronald, port: %s, identityFiles: [%s], knownHostsFile: %s}
  dns: {domain: lab.test, records: []}
`, port, key, filepath.Join(dir, "known_hosts"))
	if err := os.WriteFile(profile, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--profiles-dir", dir, "preflight", "-f", profile, "--accept-new-host-keys")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond) // connected, waiting for the server's version line
	start := time.Now()
	_ = cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		t.Logf("labctl ended: %v", err)
	case <-time.After(8 * time.Second): // the connect timeout is 10 s, three attempts
		_ = cmd.Process.Kill()
		t.Fatalf("labctl still waits for the mute host after Ctrl-C:\n%s", stderr.String())
	}
	t.Logf("stopped %s after Ctrl-C: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(stderr.String()))
	if !strings.Contains(stderr.String(), "stopping") || cmd.ProcessState.ExitCode() == 0 {
		t.Errorf("exit %d, stderr:\n%s", cmd.ProcessState.ExitCode(), stderr.String())
	}
}

// A second interrupt exits at once, whatever the run is doing.
func TestSecondInterruptExitsAtOnce(t *testing.T) {
	cancelled, exited := make(chan struct{}), make(chan int, 1)
	var stderr bytes.Buffer
	interrupts(func() { close(cancelled) }, &stderr, func(code int) { exited <- code })
	_ = syscall.Kill(os.Getpid(), syscall.SIGINT)
	<-cancelled
	_ = syscall.Kill(os.Getpid(), syscall.SIGINT)
	if code := <-exited; code != 130 {
		t.Fatalf("exit %d", code)
	}
}

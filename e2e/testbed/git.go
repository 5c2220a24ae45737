package testbed

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// GitServer serves bare repositories under Root over git's smart HTTP
// protocol (git http-backend behind net/http/cgi), so that pods in the
// bed's clusters can clone and fetch from the host.
type GitServer struct {
	Root string
	Addr string // host:port it listens on
	srv  *http.Server
}

// StartGitServer listens on addr (e.g. "0.0.0.0:0"); it needs git.
func StartGitServer(root, addr string) (*GitServer, error) {
	backend, err := gitExecPath("git-http-backend")
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	h := &cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}}
	g := &GitServer{Root: root, Addr: l.Addr().String(), srv: &http.Server{Handler: h}}
	go func() { _ = g.srv.Serve(l) }()
	return g, nil
}

// Close stops the server.
func (g *GitServer) Close() error { return g.srv.Close() }

func gitExecPath(name string) (string, error) {
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		return "", fmt.Errorf("git --exec-path: %w (the git server needs git)", err)
	}
	p := filepath.Join(strings.TrimSpace(string(out)), name)
	if _, err := os.Stat(p); err != nil {
		return "", err
	}
	return p, nil
}

// Repo is a bare repository on the server with a work tree to commit from.
type Repo struct {
	Bare, Work string
}

// NewRepo creates root/<name>.git and a work tree for it.
func (g *GitServer) NewRepo(ctx context.Context, name, work string) (*Repo, error) {
	r := &Repo{Bare: filepath.Join(g.Root, name+".git"), Work: work}
	for _, args := range [][]string{
		{"init", "-q", "--bare", "-b", "main", r.Bare},
		{"-C", r.Bare, "config", "http.receivepack", "true"},
		{"init", "-q", "-b", "main", work},
	} {
		if out, err := exec.CommandContext(ctx, "git", args...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	return r, nil
}

// Commit writes files (path → content) into the work tree, commits and
// pushes to the bare repository; it returns the commit hash.
func (r *Repo) Commit(ctx context.Context, msg string, files map[string]string) (string, error) {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", append([]string{"-C", r.Work, "-c", "user.name=labctl test bed", "-c", "user.email=testbed@labctl.invalid"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out)), nil
	}
	// Others (Flux's bootstrap) push too: start from the remote's main
	// (an empty repository has none yet).
	if _, err := git("fetch", "-q", r.Bare, "main"); err == nil {
		if _, err := git("reset", "-q", "--hard", "FETCH_HEAD"); err != nil {
			return "", err
		}
	}
	for p, content := range files {
		full := filepath.Join(r.Work, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	for _, args := range [][]string{{"add", "-A"}, {"commit", "-q", "-m", msg}, {"push", "-q", r.Bare, "HEAD:main"}} {
		if _, err := git(args...); err != nil {
			return "", err
		}
	}
	return git("rev-parse", "HEAD")
}

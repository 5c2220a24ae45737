package bootstrap

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/pkg/git"
	"github.com/fluxcd/pkg/git/gogit"
	"github.com/fluxcd/pkg/git/repository"
	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/labctl/labctl/internal/sshdtest"
	"github.com/labctl/labctl/profiles"
)

func TestGeneratedDeployKeyIsKeptPerProfile(t *testing.T) {
	dir := t.TempDir()
	b := &Backend{Spec: spec(t, "production"), Context: "production", KeyDir: dir}
	k1, err := b.deployKey()
	if err != nil || !k1.Generated || !strings.HasPrefix(k1.Public, "ssh-ed25519 ") {
		t.Fatalf("first: %+v %v", k1.Public, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "production", "flux-deploy-key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	k2, err := b.deployKey()
	if err != nil || k2.Generated || k2.Public != k1.Public {
		t.Errorf("second: generated %v, same key %v, %v", k2.Generated, k2.Public == k1.Public, err)
	}
}

func TestDeployKeyRefRefusesEncryptedAndGarbage(t *testing.T) {
	dir := t.TempDir()
	enc, _ := os.ReadFile(sshdtest.WriteKey(t, dir, "enc", "pass"))
	for _, tc := range []struct{ value, want string }{
		{string(enc), "passphrase-protected; Flux reads it from a Secret"},
		{"not a key", "not an SSH private key"},
	} {
		s := spec(t, "production")
		s.Flux.DeployKeyRef = &profiles.SecretRef{Env: "DEPLOY_KEY"}
		b := &Backend{Spec: s, Lookup: func(string) (string, bool) { return tc.value, true }}
		_, err := b.deployKey()
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "spec.flux.deployKeyRef (env:DEPLOY_KEY)") {
			t.Errorf("%q: %v", tc.want, err)
		}
	}
}

// gitSSHD is an OpenSSH server whose user can run git over SSH on a bare
// repository with one commit on main.
func gitSSHD(t *testing.T) (*sshdtest.Server, string) {
	t.Helper()
	if _, err := exec.LookPath("git-receive-pack"); err != nil {
		t.Fatalf("these tests need git (apt-get install git): %v", err)
	}
	s := sshdtest.New(t, sshdtest.Options{})
	repo := filepath.Join(s.Dir, "gitops.git")
	work := filepath.Join(s.Dir, "seed")
	for _, args := range [][]string{
		{"init", "-q", "--bare", "-b", "main", repo},
		{"init", "-q", "-b", "main", work},
		{"-C", work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "seed"},
		{"-C", work, "push", "-q", repo, "main"},
	} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v %s", args, err, out)
		}
	}
	s.Start()
	return s, fmt.Sprintf("ssh://%s@127.0.0.1:%d%s", s.User, s.Port, repo)
}

// TestPushOverSSHWithTheHostKeyFromKnownHosts: labctl's push uses the
// deploy key and checks the git host's key against known_hosts; a host
// missing from it, or with another key, is refused.
func TestPushOverSSHWithTheHostKeyFromKnownHosts(t *testing.T) {
	s, repoURL := gitSSHD(t)
	keyDir := t.TempDir()
	sp := spec(t, "production")
	sp.Flux.URL = repoURL
	sp.Flux.KnownHostsFile = s.KnownHosts(s.HostKey)
	b := &Backend{Spec: sp, Context: "production", KeyDir: keyDir}
	u, _ := url.Parse(repoURL)
	auth, sec, key, err := b.sshAuth(u)
	if err != nil {
		t.Fatal(err)
	}
	// The forge's side: the deploy key gets access.
	if err := os.WriteFile(s.AuthorizedKeys, []byte(key.Public+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if sec.StringData["known_hosts"] != s.KnownHostsLine(s.HostKey) || sec.StringData["identity"] != string(key.PEM) || sec.StringData["identity.pub"] != key.Public+"\n" {
		t.Errorf("source secret: %v", keysOf(sec.StringData))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	push := func(auth *git.AuthOptions) error {
		gc, err := gogit.NewClient(t.TempDir(), auth, gogit.WithDiskStorage())
		if err != nil {
			return err
		}
		defer gc.Close()
		if _, err := gc.Clone(ctx, repoURL, repository.CloneConfig{CheckoutStrategy: repository.CheckoutStrategy{Branch: "main"}}); err != nil {
			return err
		}
		if _, err := gc.Commit(git.Commit{Author: git.Signature{Name: "labctl", Email: "labctl@localhost"}, Message: "flux-system"},
			repository.WithFiles(map[string]io.Reader{"clusters/production/flux-system/gotk-sync.yaml": strings.NewReader("kind: Kustomization\n")})); err != nil {
			return err
		}
		return gc.Push(ctx, repository.PushConfig{})
	}
	if err := push(auth); err != nil {
		t.Fatalf("push: %v\nsshd: %s", err, s.Log())
	}
	out, err := exec.Command("git", "-C", filepath.Join(s.Dir, "gitops.git"), "log", "--format=%s", "main").CombinedOutput()
	if err != nil || string(out) != "flux-system\nseed\n" {
		t.Errorf("repository log: %q %v", out, err)
	}

	other, _ := os.ReadFile(sshdtest.WriteKey(t, t.TempDir(), "other", "") + ".pub")
	otherKey, _, _, _, _ := ssh.ParseAuthorizedKey(other)
	sp.Flux.KnownHostsFile = s.KnownHosts(otherKey)
	wrong, _, _, err := b.sshAuth(u)
	if err != nil {
		t.Fatal(err)
	}
	if err := push(wrong); err == nil || !strings.Contains(err.Error(), "knownhosts: key mismatch") {
		t.Errorf("push to a host with another key: %v", err)
	}
	sp.Flux.KnownHostsFile = s.KnownHosts(nil)
	if _, _, _, err := b.sshAuth(u); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("has no key for [127.0.0.1]:%d", s.Port)) || !strings.Contains(err.Error(), "does not trust a host on first use") {
		t.Errorf("host missing from known_hosts: %v", err)
	}
}

func keysOf(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestSourceSecretIsWrittenBeforeFluxBootstrap: the secret (with the
// namespace) is created, then replaced on a re-run with a new key.
func TestSourceSecretIsWrittenBeforeFluxBootstrap(t *testing.T) {
	scheme, err := Scheme()
	if err != nil {
		t.Fatal(err)
	}
	kc := fake.NewClientBuilder().WithScheme(scheme).Build()
	ctx := context.Background()
	want := &corev1.Secret{}
	want.Name, want.Namespace = "flux-system", Namespace
	want.StringData = map[string]string{"identity": "k1", "known_hosts": "h"}
	if err := applySourceSecret(ctx, kc, want.DeepCopy()); err != nil {
		t.Fatal(err)
	}
	want.StringData = map[string]string{"identity": "k2", "known_hosts": "h"}
	if err := applySourceSecret(ctx, kc, want.DeepCopy()); err != nil {
		t.Fatal(err)
	}
	var got corev1.Secret
	if err := kc.Get(ctx, client.ObjectKey{Name: "flux-system", Namespace: Namespace}, &got); err != nil {
		t.Fatal(err)
	}
	if got.StringData["identity"] != "k2" {
		t.Errorf("secret: %v", got.StringData)
	}
	var ns corev1.Namespace
	if err := kc.Get(ctx, client.ObjectKey{Name: Namespace}, &ns); err != nil {
		t.Errorf("namespace: %v", err)
	}
}

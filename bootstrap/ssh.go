package bootstrap

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/fluxcd/pkg/git"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/labctl/labctl/provision/remote"
	localstate "github.com/labctl/labctl/provision/state"
)

// DeployKey is the SSH key labctl pushes with and Flux pulls with.
type DeployKey struct {
	// PEM is the private key, unencrypted (Flux needs it so).
	PEM []byte
	// Public is the authorized_keys line to register at the forge.
	Public string
	// Generated is set when labctl made the key in this run.
	Generated bool
}

// deployKey resolves spec.flux.deployKeyRef, or loads or generates
// labctl's own key for the profile under KeyDir.
func (b *Backend) deployKey() (DeployKey, error) {
	f := b.Spec.Flux
	if f.DeployKeyRef != nil {
		v, err := b.secret(*f.DeployKeyRef)
		if err != nil {
			return DeployKey{}, fmt.Errorf("spec.flux.deployKeyRef: %w", err)
		}
		return parseDeployKey([]byte(v+"\n"), "spec.flux.deployKeyRef ("+f.DeployKeyRef.String()+")")
	}
	if b.KeyDir == "" {
		return DeployKey{}, errors.New("spec.flux.deployKeyRef is unset and no directory was given to keep a generated deploy key")
	}
	p := filepath.Join(b.KeyDir, b.Context, "flux-deploy-key")
	if err := localstate.CheckRegular(p); err != nil {
		return DeployKey{}, fmt.Errorf("deploy key: %w", err)
	}
	if data, err := os.ReadFile(p); err == nil {
		return parseDeployKey(data, p)
	} else if !errors.Is(err, os.ErrNotExist) {
		return DeployKey{}, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return DeployKey{}, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "flux deploy key for "+b.Context)
	if err != nil {
		return DeployKey{}, err
	}
	created, err := localstate.CreateExclusive(p, pem.EncodeToMemory(block))
	if err != nil {
		return DeployKey{}, err
	}
	if !created { // another run made one meanwhile: that one is the key
		data, err := os.ReadFile(p)
		if err != nil {
			return DeployKey{}, err
		}
		return parseDeployKey(data, p)
	}
	k, err := parseDeployKey(pem.EncodeToMemory(block), p)
	k.Generated = true
	return k, err
}

func parseDeployKey(data []byte, from string) (DeployKey, error) {
	signer, err := ssh.ParsePrivateKey(data)
	var missing *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &missing):
		return DeployKey{}, fmt.Errorf("%s: the key is passphrase-protected; Flux reads it from a Secret in the cluster, so the deploy key must be unencrypted", from)
	case err != nil:
		return DeployKey{}, fmt.Errorf("%s: not an SSH private key: %w", from, err)
	}
	pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	return DeployKey{PEM: data, Public: pub}, nil
}

// gitHostKeys returns the known_hosts lines of the repository's host from
// spec.flux.knownHostsFile: labctl never trusts a git host on first use.
func (b *Backend) gitHostKeys(u *url.URL) ([]byte, error) {
	file := b.Spec.Flux.KnownHostsFile
	if file == "" {
		file = "~/.ssh/known_hosts"
	}
	port := u.Port()
	if port == "" {
		port = "22"
	}
	host := knownhosts.Normalize(net.JoinHostPort(u.Hostname(), port))
	lines, err := remote.KnownHostsLines(file, host)
	if err != nil {
		return nil, fmt.Errorf("spec.flux.knownHostsFile: %w", err)
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("spec.flux.knownHostsFile %s has no key for %s: add the git host's key after checking its fingerprint (ssh-keyscan -p %s %s, compared with what the forge publishes); labctl does not trust a host on first use", file, host, port, u.Hostname())
	}
	return []byte(strings.Join(lines, "")), nil
}

// sshAuth is the push's auth over SSH, and the Secret Flux pulls with.
func (b *Backend) sshAuth(u *url.URL) (*git.AuthOptions, *corev1.Secret, DeployKey, error) {
	key, err := b.deployKey()
	if err != nil {
		return nil, nil, key, err
	}
	hosts, err := b.gitHostKeys(u)
	if err != nil {
		return nil, nil, key, err
	}
	user := u.User.Username()
	if user == "" {
		user = "git"
	}
	auth := &git.AuthOptions{Transport: git.SSH, Host: u.Host, Username: user, Identity: key.PEM, KnownHosts: hosts}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "flux-system", Namespace: Namespace},
		StringData: map[string]string{"identity": string(key.PEM), "identity.pub": key.Public + "\n", "known_hosts": string(hosts)},
	}
	return auth, sec, key, nil
}

// applySourceSecret writes Flux's source secret before flux2's bootstrap
// runs: given an existing secret and no key options, flux2 keeps it
// instead of scanning the git host's key itself (trust on first use).
func applySourceSecret(ctx context.Context, kc client.Client, want *corev1.Secret) error {
	if err := kc.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	have := &corev1.Secret{}
	err := kc.Get(ctx, client.ObjectKeyFromObject(want), have)
	switch {
	case apierrors.IsNotFound(err):
		return kc.Create(ctx, want)
	case err != nil:
		return err
	}
	have.Data, have.StringData = nil, want.StringData
	return kc.Update(ctx, have)
}

// Package remote runs commands and writes files on hosts over SSH
// (golang.org/x/crypto/ssh): one connection per host per run with
// multiplexed sessions, keys from files and ssh-agent, strict known_hosts
// verification, an optional jump host, sudo for non-root users, atomic
// uploads, and remote output streamed with secrets redacted. Connecting is
// retried; commands never are.
package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/labctl/labctl/profiles"
)

// Config says how to reach one host.
type Config struct {
	// Name is how the host is called in messages (the profile's node name).
	Name string
	// Address and Port of sshd.
	Address string
	Port    int
	User    string
	// IdentityFiles are private keys (~ expanded); unreadable or encrypted
	// ones are an error naming the file.
	IdentityFiles []string
	// Agent uses $SSH_AUTH_SOCK when set.
	Agent bool
	// KnownHostsFile is checked strictly; see AcceptNewHostKeys.
	KnownHostsFile string
	// AcceptNewHostKeys records the key of a host absent from
	// KnownHostsFile. A changed key is refused regardless, unless
	// ReplaceHostKey says the machine was reinstalled: then its old lines
	// give way to the key it offers now.
	AcceptNewHostKeys bool
	ReplaceHostKey    bool
	// JumpHost is user@host[:port] of a bastion reached with the same
	// keys and known_hosts.
	JumpHost string
	// SudoPassword is sent to sudo when the user is not root and sudo asks.
	SudoPassword profiles.Secret
	// ConnectTimeout bounds one connection attempt (default 10s);
	// ConnectAttempts is how many attempts are made (default 3).
	ConnectTimeout  time.Duration
	ConnectAttempts int
}

// MaxSessions is how many commands run at once on one connection.
const MaxSessions = 8

// Typed errors callers branch on.
var (
	ErrHostKeyMismatch = errors.New("host key mismatch")
	ErrHostKeyUnknown  = errors.New("host key unknown")
	ErrSudoPassword    = errors.New("sudo needs a password")
	ErrAuth            = errors.New("authentication failed")
)

// Host is a connected host. Its methods are safe for concurrent use; each
// command is a new session on the one connection.
type Host struct {
	cfg      Config
	client   *ssh.Client
	jump     *ssh.Client
	root     bool
	redact   *Redactor
	commands atomic.Int64

	// sessions bounds concurrent sessions on the connection below
	// OpenSSH's default MaxSessions (10), which refuses the rest.
	sessions chan struct{}

	sudoOnce sync.Once
	sudoPass bool // sudo asks this user for a password
	sudoErr  error
}

// Dial connects, retrying refused or timed-out connections with backoff
// (never authentication or host key failures).
func Dial(ctx context.Context, cfg Config, redact *Redactor) (*Host, error) {
	if cfg.Port == 0 {
		cfg.Port = 22
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.ConnectAttempts == 0 {
		cfg.ConnectAttempts = 3
	}
	if cfg.Name == "" {
		cfg.Name = cfg.Address
	}
	if redact == nil {
		redact = &Redactor{}
	}
	if !cfg.SudoPassword.IsZero() {
		redact.Add(cfg.SudoPassword)
	}
	auth, err := authMethods(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.Name, err)
	}
	h := &Host{cfg: cfg, root: cfg.User == "root", redact: redact, sessions: make(chan struct{}, MaxSessions)}
	var dialer func(ctx context.Context, addr string) (net.Conn, error)
	if cfg.JumpHost != "" {
		ju, jaddr, err := parseJump(cfg.JumpHost)
		if err != nil {
			return nil, fmt.Errorf("%s: jump host: %w", cfg.Name, err)
		}
		jcfg := cfg
		jcfg.Name, jcfg.User = "jump host "+jaddr, ju
		jc, err := connect(ctx, jcfg, jaddr, auth, nil)
		if err != nil {
			return nil, err
		}
		h.jump = jc
		dialer = func(ctx context.Context, addr string) (net.Conn, error) { return jc.DialContext(ctx, "tcp", addr) }
	}
	addr := net.JoinHostPort(cfg.Address, strconv.Itoa(cfg.Port))
	h.client, err = connect(ctx, cfg, addr, auth, dialer)
	if err != nil {
		if h.jump != nil {
			_ = h.jump.Close()
		}
		return nil, err
	}
	return h, nil
}

func parseJump(s string) (user, addr string, err error) {
	user, hostport, ok := strings.Cut(s, "@")
	if !ok || user == "" || hostport == "" {
		return "", "", fmt.Errorf("%q: want user@host[:port]", s)
	}
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		hostport = net.JoinHostPort(hostport, "22")
	}
	return user, hostport, nil
}

func connect(ctx context.Context, cfg Config, addr string, auth []ssh.AuthMethod, dial func(context.Context, string) (net.Conn, error)) (*ssh.Client, error) {
	hk, err := newHostKeys(cfg.KnownHostsFile, cfg.AcceptNewHostKeys || cfg.ReplaceHostKey)
	if err == nil {
		hk.replace = cfg.ReplaceHostKey
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.Name, err)
	}
	sc := &ssh.ClientConfig{
		User:              cfg.User,
		Auth:              auth,
		HostKeyCallback:   hk.callback(cfg.Name),
		HostKeyAlgorithms: hk.algorithms(addr),
		Timeout:           cfg.ConnectTimeout,
	}
	if dial == nil {
		d := &net.Dialer{Timeout: cfg.ConnectTimeout}
		dial = func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }
	}
	backoff := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		c, err := handshake(ctx, dial, addr, sc)
		if err == nil {
			return c, nil
		}
		if !retryable(err) || attempt >= cfg.ConnectAttempts {
			return nil, fmt.Errorf("%s: connect %s as %s: %w", cfg.Name, addr, cfg.User, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: connect %s: %w", cfg.Name, addr, ctx.Err())
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

func handshake(ctx context.Context, dial func(context.Context, string) (net.Conn, error), addr string, sc *ssh.ClientConfig) (*ssh.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, sc.Timeout)
	defer cancel()
	conn, err := dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// The SSH handshake takes no context: a cancellation (Ctrl-C) ends it
	// by closing the connection, instead of waiting for the timeout.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, sc)
	stop()
	if err != nil && ctx.Err() != nil {
		_ = conn.Close()
		return nil, ctx.Err()
	}
	if err != nil {
		_ = conn.Close()
		if strings.Contains(err.Error(), "unable to authenticate") {
			return nil, fmt.Errorf("%w: %w", ErrAuth, err)
		}
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

// retryable is true for failures to reach sshd, false for anything sshd
// answered (auth, host key) and for cancellation.
func retryable(err error) bool {
	if errors.Is(err, ErrHostKeyMismatch) || errors.Is(err, ErrHostKeyUnknown) || errors.Is(err, ErrAuth) || errors.Is(err, context.Canceled) {
		return false
	}
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &oe) || strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "EOF")
}

func authMethods(cfg Config) ([]ssh.AuthMethod, error) {
	var signers []ssh.Signer
	for _, f := range cfg.IdentityFiles {
		p, err := profiles.ExpandHome(f)
		if err != nil {
			return nil, err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("identity file: %w", err)
		}
		s, err := ssh.ParsePrivateKey(b)
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, fmt.Errorf("identity file %s is encrypted: load it into ssh-agent instead", p)
		}
		if err != nil {
			return nil, fmt.Errorf("identity file %s: %w", p, err)
		}
		signers = append(signers, s)
	}
	var methods []ssh.AuthMethod
	if len(signers) > 0 {
		methods = append(methods, ssh.PublicKeys(signers...))
	}
	if cfg.Agent {
		if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
			conn, err := net.Dial("unix", sock)
			if err != nil {
				return nil, fmt.Errorf("ssh-agent at %s: %w", sock, err)
			}
			methods = append(methods, ssh.PublicKeysCallback(agent.NewClient(conn).Signers))
		}
	}
	if len(methods) == 0 {
		return nil, fmt.Errorf("%w: no SSH key: set ssh.identityFiles in the profile or start ssh-agent", ErrAuth)
	}
	return methods, nil
}

// Name is the host's name in messages.
func (h *Host) Name() string { return h.cfg.Name }

// Commands counts the commands run on this host.
func (h *Host) Commands() int { return int(h.commands.Load()) }

// Close ends the connection (and the jump host's).
func (h *Host) Close() error {
	err := h.client.Close()
	if h.jump != nil {
		_ = h.jump.Close()
	}
	return err
}

// Pool keeps one connection per host for a run; hosts are dialled in
// parallel, each once.
type Pool struct {
	mu     sync.Mutex
	hosts  map[string]*poolEntry
	dials  map[string]int
	Redact *Redactor
}

type poolEntry struct {
	ready chan struct{}
	h     *Host
	err   error
}

// NewPool returns an empty pool sharing one redactor.
func NewPool(r *Redactor) *Pool {
	if r == nil {
		r = &Redactor{}
	}
	return &Pool{hosts: map[string]*poolEntry{}, dials: map[string]int{}, Redact: r}
}

// Get returns the host's connection, dialling it on first use. A failed
// dial is not kept: the next Get tries again.
func (p *Pool) Get(ctx context.Context, cfg Config) (*Host, error) {
	key := cfg.User + "@" + cfg.Address + ":" + strconv.Itoa(cfg.Port)
	p.mu.Lock()
	e, ok := p.hosts[key]
	if !ok {
		e = &poolEntry{ready: make(chan struct{})}
		p.hosts[key] = e
		p.dials[key]++
		p.mu.Unlock()
		e.h, e.err = Dial(ctx, cfg, p.Redact)
		if e.err != nil {
			p.mu.Lock()
			delete(p.hosts, key)
			p.mu.Unlock()
		}
		close(e.ready)
	} else {
		p.mu.Unlock()
	}
	select {
	case <-e.ready:
		return e.h, e.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Commands returns how many commands ran per host.
func (p *Pool) Commands() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for k, e := range p.hosts {
		select {
		case <-e.ready:
			if e.h != nil {
				out[k] = e.h.Commands()
			}
		default:
		}
	}
	return out
}

// Connections returns how many connections were made per host.
func (p *Pool) Connections() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for k, v := range p.dials {
		out[k] = v
	}
	return out
}

// Close ends every connection.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.hosts {
		<-e.ready
		if e.h != nil {
			_ = e.h.Close()
		}
	}
	p.hosts = map[string]*poolEntry{}
}

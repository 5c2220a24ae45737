package remote

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"

	"github.com/labctl/labctl/profiles"
)

// Redactor replaces known secret values in remote output before it is
// shown or logged.
type Redactor struct {
	mu     sync.RWMutex
	values []string
}

// Add registers a secret to hide, whatever its length: a three-letter
// sudo password is a secret too (the cost is that its letters are hidden
// wherever they appear).
func (r *Redactor) Add(s profiles.Secret) {
	if v := s.Reveal(); v != "" {
		r.mu.Lock()
		r.values = append(r.values, v)
		r.mu.Unlock()
	}
}

// Redact hides every registered secret in s.
func (r *Redactor) Redact(s string) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, v := range r.values {
		s = strings.ReplaceAll(s, v, "[redacted]")
	}
	return s
}

// Cmd is one remote command.
type Cmd struct {
	// Script runs under /bin/sh -c.
	Script string
	// Stdin feeds the command; nil for none.
	Stdin []byte
	// Sudo runs it as root when the login user is not root.
	Sudo bool
	// Output receives each line of stdout and stderr as it arrives,
	// already redacted. Nil discards it.
	Output func(stream, line string)
}

// Result is a finished command's output (redacted) and exit status.
type Result struct {
	Stdout, Stderr string
	ExitStatus     int
}

// ExitError is a command that ran and exited non-zero.
type ExitError struct {
	Host, Command string
	Status        int
	Stderr        string
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("%s: `%s`: exit status %d", e.Host, e.Command, e.Status)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + lastLine(s)
	}
	return msg
}

func lastLine(s string) string {
	lines := strings.Split(s, "\n")
	return lines[len(lines)-1]
}

const maxCapture = 1 << 20

// Run executes a command in a new session on the host's connection. It
// is never retried: a command may have had effects before a failure.
func (h *Host) Run(ctx context.Context, c Cmd) (Result, error) {
	h.commands.Add(1)
	script, stdin, err := h.wrap(ctx, c)
	if err != nil {
		return Result{}, err
	}
	select {
	case h.sessions <- struct{}{}:
		defer func() { <-h.sessions }()
	case <-ctx.Done():
		return Result{}, fmt.Errorf("%s: %w", h.cfg.Name, ctx.Err())
	}
	s, err := h.client.NewSession()
	if err != nil {
		return Result{}, fmt.Errorf("%s: new session: %w", h.cfg.Name, err)
	}
	defer s.Close()
	if stdin != nil {
		s.Stdin = bytes.NewReader(stdin)
	}
	stdout, err := s.StdoutPipe()
	if err != nil {
		return Result{}, err
	}
	stderr, err := s.StderrPipe()
	if err != nil {
		return Result{}, err
	}
	var outBuf, errBuf bytes.Buffer
	var wg sync.WaitGroup
	var mu sync.Mutex
	pump := func(name string, r io.Reader, buf *bytes.Buffer) {
		defer wg.Done()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := h.redact.Redact(sc.Text())
			mu.Lock()
			if buf.Len() < maxCapture {
				buf.WriteString(line)
				buf.WriteByte('\n')
			}
			if c.Output != nil {
				c.Output(name, line)
			}
			mu.Unlock()
		}
	}
	wg.Add(2)
	go pump("stdout", stdout, &outBuf)
	go pump("stderr", stderr, &errBuf)
	if err := s.Start(script); err != nil {
		return Result{}, fmt.Errorf("%s: start: %w", h.cfg.Name, err)
	}
	done := make(chan error, 1)
	go func() { wg.Wait(); done <- s.Wait() }()
	var waitErr error
	select {
	case waitErr = <-done:
	case <-ctx.Done():
		// OpenSSH may ignore the signal; the remote command can then run to
		// its end. It is never started again.
		_ = s.Signal(ssh.SIGTERM)
		_ = s.Close()
		return Result{}, fmt.Errorf("%s: `%s`: %w", h.cfg.Name, summary(h.redact.Redact(c.Script)), ctx.Err())
	}
	res := Result{Stdout: strings.TrimRight(outBuf.String(), "\n"), Stderr: strings.TrimRight(errBuf.String(), "\n")}
	var ee *ssh.ExitError
	switch {
	case waitErr == nil:
		return res, nil
	case errors.As(waitErr, &ee):
		res.ExitStatus = ee.ExitStatus()
		if c.Sudo && !h.root && strings.Contains(res.Stderr, "a password is required") {
			return res, fmt.Errorf("%w: %s: sudo for %s asks for a password; give it in the profile (ssh.sudoPasswordRef) or allow NOPASSWD", ErrSudoPassword, h.cfg.Name, h.cfg.User)
		}
		if c.Sudo && !h.root && (strings.Contains(res.Stderr, "incorrect password") || strings.Contains(res.Stderr, "Sorry, try again")) {
			return res, fmt.Errorf("%w: %s: sudo rejected the password for %s", ErrSudoPassword, h.cfg.Name, h.cfg.User)
		}
		return res, &ExitError{Host: h.cfg.Name, Command: summary(h.redact.Redact(c.Script)), Status: res.ExitStatus, Stderr: res.Stderr}
	}
	return res, fmt.Errorf("%s: `%s`: %w", h.cfg.Name, summary(h.redact.Redact(c.Script)), waitErr)
}

// Download copies the remote file at path into w, byte for byte (an etcd
// snapshot: binary, and larger than any output Run keeps), reading it as
// root when sudo is set. It returns the number of bytes copied.
func (h *Host) Download(ctx context.Context, path string, w io.Writer, sudo bool) (int64, error) {
	h.commands.Add(1)
	c := Cmd{Script: "cat " + shellQuote(path), Sudo: sudo}
	script, stdin, err := h.wrap(ctx, c)
	if err != nil {
		return 0, err
	}
	select {
	case h.sessions <- struct{}{}:
		defer func() { <-h.sessions }()
	case <-ctx.Done():
		return 0, fmt.Errorf("%s: %w", h.cfg.Name, ctx.Err())
	}
	s, err := h.client.NewSession()
	if err != nil {
		return 0, fmt.Errorf("%s: new session: %w", h.cfg.Name, err)
	}
	defer s.Close()
	if stdin != nil {
		s.Stdin = bytes.NewReader(stdin)
	}
	out, err := s.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var errBuf bytes.Buffer
	s.Stderr = &errBuf
	if err := s.Start(script); err != nil {
		return 0, fmt.Errorf("%s: start: %w", h.cfg.Name, err)
	}
	type copied struct {
		n   int64
		err error
	}
	done := make(chan copied, 1)
	go func() {
		n, err := io.Copy(w, out)
		if werr := s.Wait(); err == nil {
			err = werr
		}
		done <- copied{n, err}
	}()
	select {
	case c := <-done:
		var ee *ssh.ExitError
		if errors.As(c.err, &ee) {
			return c.n, &ExitError{Host: h.cfg.Name, Command: "download " + path, Status: ee.ExitStatus(), Stderr: h.redact.Redact(errBuf.String())}
		}
		return c.n, c.err
	case <-ctx.Done():
		_ = s.Close()
		return 0, fmt.Errorf("%s: download %s: %w", h.cfg.Name, path, ctx.Err())
	}
}

// wrap turns a script into the command line and stdin to send.
func (h *Host) wrap(ctx context.Context, c Cmd) (string, []byte, error) {
	script := "/bin/sh -c " + shellQuote(c.Script)
	if !c.Sudo || h.root {
		return script, c.Stdin, nil
	}
	needPass, err := h.sudoNeedsPassword(ctx)
	if err != nil {
		return "", nil, err
	}
	if !needPass {
		return "sudo -n -- " + script, c.Stdin, nil
	}
	if h.cfg.SudoPassword.IsZero() {
		return "", nil, fmt.Errorf("%w: %s: sudo for %s asks for a password; give it in the profile (ssh.sudoPasswordRef) or allow NOPASSWD", ErrSudoPassword, h.cfg.Name, h.cfg.User)
	}
	// -k makes sudo ask even with a cached timestamp, so the password line
	// is always consumed by sudo and never reaches the command.
	stdin := append([]byte(h.cfg.SudoPassword.Reveal()+"\n"), c.Stdin...)
	return "sudo -k -S -p '' -- " + script, stdin, nil
}

// sudoNeedsPassword asks sudo once per host whether it would prompt.
func (h *Host) sudoNeedsPassword(ctx context.Context) (bool, error) {
	h.sudoOnce.Do(func() {
		h.sessions <- struct{}{}
		defer func() { <-h.sessions }()
		s, err := h.client.NewSession()
		if err != nil {
			h.sudoErr = err
			return
		}
		defer s.Close()
		var errb bytes.Buffer
		s.Stderr = &errb
		err = s.Run("sudo -n true")
		var ee *ssh.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee) && strings.Contains(errb.String(), "password is required"):
			h.sudoPass = true
		case errors.As(err, &ee):
			h.sudoErr = fmt.Errorf("%s: %s cannot use sudo: %s", h.cfg.Name, h.cfg.User, strings.TrimSpace(errb.String()))
		default:
			h.sudoErr = err
		}
	})
	return h.sudoPass, h.sudoErr
}

// Upload writes data to a remote path atomically: a temporary file in the
// same directory, chmod, then rename over the target. Parent directories
// are created.
func (h *Host) Upload(ctx context.Context, dst string, data []byte, mode os.FileMode, sudo bool) error {
	if !path.IsAbs(dst) {
		return fmt.Errorf("%s: upload %s: want an absolute path", h.cfg.Name, dst)
	}
	dir := path.Dir(dst)
	script := fmt.Sprintf(`set -e
mkdir -p %[1]s
tmp=$(mktemp %[1]s/.labctl-upload.XXXXXX)
trap 'rm -f "$tmp"' EXIT
cat > "$tmp"
chmod %[2]o "$tmp"
mv -f "$tmp" %[3]s
trap - EXIT`, shellQuote(dir), mode.Perm(), shellQuote(dst))
	_, err := h.Run(ctx, Cmd{Script: script, Stdin: data, Sudo: sudo})
	if err != nil {
		return fmt.Errorf("upload %s: %w", dst, err)
	}
	return nil
}

// shellQuote quotes s for /bin/sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// summary is a command's first line, shortened for messages.
func summary(script string) string {
	line, _, more := strings.Cut(strings.TrimSpace(script), "\n")
	if len(line) > 80 {
		line, more = line[:77], true
	}
	if more {
		line += " …"
	}
	return line
}

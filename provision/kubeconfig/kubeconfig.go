// Package kubeconfig turns the kubeconfig a K3s server writes
// (/etc/rancher/k3s/k3s.yaml: cluster, user and context all "default",
// server https://127.0.0.1:6443) into a context named after the profile
// with a reachable server address, and merges it into the user's
// kubeconfig without touching any other context.
package kubeconfig

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/tools/clientcmd"
	api "k8s.io/client-go/tools/clientcmd/api"
)

// Rename returns the single-context kubeconfig raw with its cluster, user
// and context named name and the cluster's server set to server.
func Rename(raw []byte, name, server string) (*api.Config, error) {
	in, err := clientcmd.Load(raw)
	if err != nil {
		return nil, fmt.Errorf("parse kubeconfig: %w", err)
	}
	ctxName := in.CurrentContext
	if ctxName == "" && len(in.Contexts) == 1 {
		for k := range in.Contexts {
			ctxName = k
		}
	}
	kc, ok := in.Contexts[ctxName]
	if !ok {
		return nil, fmt.Errorf("kubeconfig has no current context")
	}
	cluster, ok := in.Clusters[kc.Cluster]
	if !ok {
		return nil, fmt.Errorf("kubeconfig context %q names missing cluster %q", ctxName, kc.Cluster)
	}
	user, ok := in.AuthInfos[kc.AuthInfo]
	if !ok {
		return nil, fmt.Errorf("kubeconfig context %q names missing user %q", ctxName, kc.AuthInfo)
	}
	cl := cluster.DeepCopy()
	cl.Server = server
	out := api.NewConfig()
	out.Clusters[name] = cl
	out.AuthInfos[name] = user.DeepCopy()
	out.Contexts[name] = &api.Context{Cluster: name, AuthInfo: name, Namespace: kc.Namespace}
	out.CurrentContext = name
	return out, nil
}

// Merge writes the entries of add (one context, its cluster and user) into
// the kubeconfig at path, replacing entries of the same names and keeping
// every other one. The current context changes only when switchContext is
// set or the file had none. The file is written atomically, mode 0600.
// It reports whether the file changed.
func Merge(path string, add *api.Config, switchContext bool) (bool, error) {
	data, old, err := merged(path, add, switchContext)
	if err != nil || string(data) == string(old) {
		return false, err
	}
	return true, write(path, data)
}

// Remove deletes the context, cluster and user called name from the
// kubeconfig at path, keeping every other entry; the current context is
// cleared if it was that one. It reports whether the file changed; a
// missing file or name is no change.
func Remove(path, name string) (bool, error) {
	old, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	cur, err := clientcmd.Load(old)
	if err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	delete(cur.Contexts, name)
	delete(cur.Clusters, name)
	delete(cur.AuthInfos, name)
	if cur.CurrentContext == name {
		cur.CurrentContext = ""
	}
	data, err := clientcmd.Write(*cur)
	if err != nil || string(data) == string(old) {
		return false, err
	}
	return true, write(path, data)
}

// Has reports whether the kubeconfig at path holds the context name.
func Has(path, name string) (bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	cur, err := clientcmd.Load(b)
	if err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	_, ok := cur.Contexts[name]
	return ok, nil
}

// target is the file a kubeconfig path names: a symbolic link's target
// (kubectl writes through the link, so a linked ~/.kube/config stays a
// link), else path itself.
func target(path string) (string, error) {
	for i := 0; i < 40; i++ {
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			return path, nil
		}
		link, err := os.Readlink(path)
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(link) {
			link = filepath.Join(filepath.Dir(path), link)
		}
		path = link
	}
	return "", fmt.Errorf("%s: too many levels of symbolic links", path)
}

// CheckWritable reports, before anything else changes, whether the
// kubeconfig at path can be written: the file (or its link's target), or
// the nearest directory above it that exists.
func CheckWritable(path string) error {
	p, err := target(path)
	if err != nil {
		return err
	}
	if f, err := os.OpenFile(p, os.O_WRONLY, 0); err == nil {
		return f.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("kubeconfig %s is not writable: %w", path, err)
	}
	dir := filepath.Dir(p)
	for {
		if _, err := os.Stat(dir); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	f, err := os.CreateTemp(dir, ".labctl-write-check-*")
	if err != nil {
		return fmt.Errorf("kubeconfig %s cannot be written (directory %s): %w", path, dir, err)
	}
	name := f.Name()
	_ = f.Close()
	return os.Remove(name)
}

// write replaces path (through a symbolic link, its target) atomically
// with data, mode 0600.
func write(path string, data []byte) error {
	path, err := target(path)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".kubeconfig-*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Current reports whether Merge would leave the file as it is.
func Current(path string, add *api.Config, switchContext bool) (bool, error) {
	data, old, err := merged(path, add, switchContext)
	return err == nil && string(data) == string(old), err
}

// merged returns the file's new and old contents.
func merged(path string, add *api.Config, switchContext bool) (data, old []byte, err error) {
	cur := api.NewConfig()
	old, err = os.ReadFile(path)
	switch {
	case err == nil:
		if cur, err = clientcmd.Load(old); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return nil, nil, err
	}
	for k, v := range add.Clusters {
		cur.Clusters[k] = v
	}
	for k, v := range add.AuthInfos {
		cur.AuthInfos[k] = v
	}
	for k, v := range add.Contexts {
		cur.Contexts[k] = v
	}
	if switchContext || cur.CurrentContext == "" {
		cur.CurrentContext = add.CurrentContext
	}
	data, err = clientcmd.Write(*cur)
	return data, old, err
}

// DefaultPath is the first file of $KUBECONFIG, else ~/.kube/config;
// without either (HOME unset) there is none: labctl never writes a
// kubeconfig into the working directory by accident.
func DefaultPath() (string, error) {
	if env := os.Getenv("KUBECONFIG"); env != "" {
		return filepath.SplitList(env)[0], nil
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return "", fmt.Errorf("no kubeconfig: $HOME and $KUBECONFIG are unset; pass --kubeconfig FILE")
	}
	return filepath.Join(home, ".kube", "config"), nil
}

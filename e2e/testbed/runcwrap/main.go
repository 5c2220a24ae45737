// Command runcwrap is an OCI runtime that edits the container's spec and
// then execs the real runc. The test bed registers it as Docker's default
// runtime (and as containerd's runc inside node containers) on machines
// whose root lacks CAP_SYS_RESOURCE, where `--privileged` would otherwise
// fail with "unable to apply caps: operation not permitted":
//
//   - CAP_SYS_RESOURCE is removed from every capability set of the process
//     (config.json for create/run, the --process file for exec);
//   - a negative process.oomScoreAdj is raised to 0 (lowering it needs the
//     same capability; the kubelet asks for -998 for pod sandboxes).
//
// Everything else passes through untouched. The real runc is $RUNCWRAP_RUNC,
// else /usr/sbin/runc, /usr/bin/runc or /usr/local/sbin/runc.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

const dropped = "CAP_SYS_RESOURCE"

func main() {
	if err := edit(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "runcwrap: %v\n", err)
		os.Exit(1)
	}
	real := realRunc()
	if real == "" {
		fmt.Fprintln(os.Stderr, "runcwrap: no runc found (set RUNCWRAP_RUNC)")
		os.Exit(1)
	}
	if err := syscall.Exec(real, append([]string{real}, os.Args[1:]...), os.Environ()); err != nil {
		fmt.Fprintf(os.Stderr, "runcwrap: exec %s: %v\n", real, err)
		os.Exit(1)
	}
}

func realRunc() string {
	if p := os.Getenv("RUNCWRAP_RUNC"); p != "" {
		return p
	}
	self, _ := os.Executable()
	for _, p := range []string{"/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc"} {
		if p == self {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// edit finds the spec file the subcommand reads and rewrites it.
func edit(args []string) error {
	cmd, bundle, process := "", "", ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		next := func() string {
			if i+1 < len(args) {
				i++
				return args[i]
			}
			return ""
		}
		switch {
		case a == "--bundle" || a == "-b":
			bundle = next()
		case len(a) > 9 && a[:9] == "--bundle=":
			bundle = a[9:]
		case a == "--process" || a == "-p":
			process = next()
		case len(a) > 10 && a[:10] == "--process=":
			process = a[10:]
		case a == "--root" || a == "--log" || a == "--log-format" || a == "--criu" || a == "--pid-file" || a == "--console-socket":
			next() // global or subcommand flags with a value
		case cmd == "" && len(a) > 0 && a[0] != '-':
			cmd = a
		}
	}
	switch cmd {
	case "create", "run":
		if bundle == "" {
			bundle = "."
		}
		return rewrite(filepath.Join(bundle, "config.json"), true)
	case "exec":
		if process != "" {
			return rewrite(process, false)
		}
	}
	return nil
}

// rewrite edits a spec file in place; inSpec is true for config.json
// (process is a field) and false for an exec process file (it is the
// process itself).
func rewrite(path string, inSpec bool) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	proc := doc
	if inSpec {
		p, ok := doc["process"].(map[string]any)
		if !ok {
			return nil
		}
		proc = p
	}
	if caps, ok := proc["capabilities"].(map[string]any); ok {
		for set, v := range caps {
			list, ok := v.([]any)
			if !ok {
				continue
			}
			kept := list[:0]
			for _, c := range list {
				if c != dropped {
					kept = append(kept, c)
				}
			}
			caps[set] = kept
		}
	}
	if adj, ok := proc["oomScoreAdj"].(float64); ok && adj < 0 {
		proc["oomScoreAdj"] = 0
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o600)
}

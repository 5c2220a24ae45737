// Package prereq checks and installs what Longhorn needs on a host before
// a cluster exists: open-iscsi with iscsid running, nfs-common,
// cryptsetup/dmsetup, the iscsi_tcp and dm_crypt kernel modules (loaded and
// persisted), a multipathd blacklist for sd devices where multipath-tools
// is installed, and the data path.
//
// Gather reads every fact with one remote command; Assess turns facts into
// findings; Fixes lists the changes that would make a host pass, each its
// own script, so a plan can show them one by one. What the kernel cannot
// do (load modules, provide iSCSI) is a warning with its cause, never a
// silent pass.
package prereq

import (
	"context"
	"encoding/base64"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/k3s"
)

// Want is what a host must have: Longhorn's prerequisites with its data
// path, and the profile's tuning.
type Want struct {
	// Longhorn: its packages, iscsid, modules, multipath blacklist and
	// data path (DataPath) are wanted.
	Longhorn bool
	DataPath string
	// Sysctl settings (fs.inotify.max_user_watches → 524288).
	Sysctl map[string]string
	// Journald, when set, is the journal's storage.
	Journald *profiles.Journald
	// Packages are installed besides Longhorn's.
	Packages []string
	// EtcdMount (servers) is the mount point whose k3s-db directory is
	// bind-mounted at K3s's server/db (spec.k3s.etcdMount).
	EtcdMount string
}

// WantFor is what node n of spec must have.
func WantFor(s *profiles.Spec, n profiles.Node) Want {
	w := Want{}
	if s.Storage.Longhorn != nil {
		w.Longhorn, w.DataPath = true, s.Storage.Longhorn.DataPath
	}
	if h := s.Hosts; h != nil {
		w.Sysctl, w.Journald, w.Packages = h.Sysctl, h.Journald, h.Packages
	}
	if n.Role == profiles.RoleServer {
		w.EtcdMount = s.K3s.EtcdMount
	}
	return w
}

// The etcd mount: K3s's server/db (etcd's data, its snapshots and
// K3s's reset flag) bind-mounted from a directory on the named disk.
// Not server/db/etcd itself: K3s's own restore renames that directory
// (etcd-old-<time>), which the kernel refuses for a mount point.
const (
	EtcdTarget = k3s.DBDir
	etcdSubdir = "k3s-db"
	// EtcdUnitDropIn makes K3s wait for the mount at boot: a K3s that
	// started on an empty directory of the root disk would begin a new
	// etcd there.
	EtcdUnitDropIn = "/etc/systemd/system/k3s.service.d/90-labctl-etcd-mount.conf"
)

// EtcdSource is the directory on the etcd disk.
func (w Want) EtcdSource() string { return path.Join(w.EtcdMount, etcdSubdir) }

// EtcdFstabLine records the bind mount; the disk's own line must come
// first, which x-systemd.requires-mounts-for makes explicit.
func (w Want) EtcdFstabLine() string {
	return fmt.Sprintf("%s %s none bind,x-systemd.requires-mounts-for=%s 0 0", w.EtcdSource(), EtcdTarget, w.EtcdMount)
}

func (w Want) etcdDropIn() string {
	return "# Written by labctl (spec.k3s.etcdMount).\n[Unit]\nRequiresMountsFor=" + EtcdTarget + "\n"
}

// packages are Longhorn's and the profile's, in that order, once each.
func (w Want) packages() []string {
	var out []string
	if w.Longhorn {
		out = slices.Clone(Packages)
	}
	for _, p := range w.Packages {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// Files labctl writes for the tuning.
const (
	SysctlFile   = "/etc/sysctl.d/90-labctl.conf"
	JournaldFile = "/etc/systemd/journald.conf.d/90-labctl.conf"
)

// SysctlConf is SysctlFile's text: the settings, sorted.
func (w Want) SysctlConf() string {
	var b strings.Builder
	b.WriteString("# Written by labctl (spec.hosts.sysctl); changes are overwritten on the next run.\n")
	for _, k := range slices.Sorted(maps.Keys(w.Sysctl)) {
		fmt.Fprintf(&b, "%s = %s\n", k, w.Sysctl[k])
	}
	return b.String()
}

// JournaldConf is JournaldFile's text.
func (w Want) JournaldConf() string {
	j := w.Journald
	storage := "auto"
	if j.Persistent {
		storage = "persistent"
	}
	s := "# Written by labctl (spec.hosts.journald); changes are overwritten on the next run.\n[Journal]\nStorage=" + storage + "\n"
	if j.MaxUse != "" {
		s += "SystemMaxUse=" + j.MaxUse + "\n"
	}
	return s
}

// journaldSettings are JournaldFile's settings on one line.
func (w Want) journaldSettings() string {
	_, body, _ := strings.Cut(w.JournaldConf(), "[Journal]\n")
	return strings.ReplaceAll(strings.TrimSpace(body), "\n", ", ")
}

// procSys is where a sysctl key is read and written.
func procSys(key string) string { return "/proc/sys/" + strings.ReplaceAll(key, ".", "/") }

// Run runs a shell script on a host, as root when sudo is set, and
// returns its standard output. The package needs nothing else of the
// transport (provision/nodes gives it the SSH one).
type Run func(ctx context.Context, script string, sudo bool) (stdout string, err error)

// Packages Longhorn needs on Debian and Ubuntu hosts.
var Packages = []string{"open-iscsi", "nfs-common", "cryptsetup", "dmsetup"}

// Modules Longhorn needs loaded, and where labctl persists them.
var Modules = []string{"iscsi_tcp", "dm_crypt"}

// ModulesFile lists Modules for systemd-modules-load.
const ModulesFile = "/etc/modules-load.d/longhorn.conf"

// BlacklistLine keeps multipathd off the disks Longhorn attaches.
const BlacklistLine = `devnode "^sd[a-z0-9]+"`

// Facts are what Gather read, key=value.
type Facts map[string]string

// GatherScript prints one key=value per line and changes nothing.
func GatherScript(w Want) string {
	dataPath := w.DataPath
	var b strings.Builder
	b.WriteString(`. /etc/os-release 2>/dev/null; echo "os=$ID $VERSION_ID"
echo "kernel=$(uname -r)"
if [ -d "/lib/modules/$(uname -r)" ]; then echo "modules.loadable=yes"; else echo "modules.loadable=no"; fi
`)
	for _, p := range w.packages() {
		fmt.Fprintf(&b, "echo \"pkg.%s=$(dpkg-query -W -f='${Status}' %s 2>/dev/null)\"\n", p, p)
	}
	for _, k := range slices.Sorted(maps.Keys(w.Sysctl)) {
		fmt.Fprintf(&b, "echo \"sysctl.%s=$(tr '\\t' ' ' < %s 2>/dev/null)\"\n", k, procSys(k))
	}
	if len(w.Sysctl) > 0 {
		fmt.Fprintf(&b, "echo \"sysctl.file=$(base64 -w0 < %s 2>/dev/null)\"\n", SysctlFile)
	}
	if w.EtcdMount != "" {
		fmt.Fprintf(&b, `M=%s S=%s T=%s
if mountpoint -q "$M"; then echo "etcdmount.mounted=yes $(findmnt -n -o SOURCE,FSTYPE "$M" | tr -s ' ')"; else echo etcdmount.mounted=no; fi
if [ -d "$T" ] && [ -d "$S" ] && [ "$(stat -c %%d:%%i "$T")" = "$(stat -c %%d:%%i "$S")" ]; then echo etcdmount.bound=yes; else echo etcdmount.bound=no; fi
if [ -d "$T" ] && [ -n "$(ls -A "$T" 2>/dev/null)" ]; then echo "etcdmount.target=$(ls -A "$T" | head -n 5 | tr '\n' ' ')"; fi
if grep -qxF %s /etc/fstab 2>/dev/null; then echo etcdmount.fstab=yes; else echo etcdmount.fstab=no; fi
if grep -qxF 'RequiresMountsFor=%s' %s 2>/dev/null; then echo etcdmount.unit=yes; else echo etcdmount.unit=no; fi
`, shq(w.EtcdMount), shq(w.EtcdSource()), EtcdTarget, shq(w.EtcdFstabLine()), EtcdTarget, EtcdUnitDropIn)
	}
	if w.Journald != nil {
		fmt.Fprintf(&b, "echo \"journald.file=$(base64 -w0 < %s 2>/dev/null)\"\n", JournaldFile)
		b.WriteString("if ls /var/log/journal/*/system.journal >/dev/null 2>&1; then echo journald.persistent=yes; else echo journald.persistent=no; fi\n")
	}
	for _, m := range Modules {
		fmt.Fprintf(&b, "if [ -d /sys/module/%s ]; then echo mod.%s=loaded; else echo mod.%s=absent; fi\n", m, m, m)
	}
	fmt.Fprintf(&b, `echo "iscsid.enabled=$(systemctl is-enabled iscsid 2>/dev/null)"
echo "iscsid.active=$(systemctl is-active iscsid 2>/dev/null)"
echo "modules.persisted=$(tr '\n' ' ' < %s 2>/dev/null)"
if command -v multipathd >/dev/null 2>&1; then echo multipath.installed=yes; else echo multipath.installed=no; fi
if grep -Fq '%s' /etc/multipath.conf 2>/dev/null; then echo multipath.blacklisted=yes; else echo multipath.blacklisted=no; fi
if [ -d %s ]; then echo datapath=yes; else echo datapath=no; fi
`, ModulesFile, BlacklistLine, shq(dataPath))
	return b.String()
}

// Gather reads the host's facts with one command.
func Gather(ctx context.Context, run Run, w Want) (Facts, error) {
	out, err := run(ctx, GatherScript(w), false)
	if err != nil {
		return nil, fmt.Errorf("gather host facts: %w", err)
	}
	f := Facts{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			f[k] = strings.TrimSpace(v)
		}
	}
	if f["os"] == "" {
		return nil, fmt.Errorf("gather host facts: unexpected output %q", out)
	}
	return f, nil
}

// Status of one finding.
type Status string

// Finding statuses.
const (
	OK      Status = "ok"
	Missing Status = "missing" // labctl can fix it
	Warn    Status = "warn"    // labctl cannot: the cause is in Detail
	// Refused: labctl will not, as it would hide or destroy data; Detail
	// says what the operator can do.
	Refused Status = "refused"
)

// Finding is one checked item.
type Finding struct {
	Item   string `json:"item"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	// Tuning: the item is the profile's (spec.hosts), not Longhorn's.
	Tuning bool `json:"tuning,omitempty"`
}

// kernelCannot explains why a module cannot be loaded, or "".
func (f Facts) kernelCannot(module string) string {
	if f["mod."+module] == "loaded" || f["modules.loadable"] == "yes" {
		return ""
	}
	return fmt.Sprintf("kernel %s has no %s and cannot load modules (/lib/modules/%s is absent)", f["kernel"], module, f["kernel"])
}

// Assess turns facts into findings, in a fixed order.
func Assess(f Facts, w Want) []Finding {
	dataPath := w.DataPath
	var out []Finding
	add := func(item string, st Status, detail string) {
		out = append(out, Finding{Item: item, Status: st, Detail: detail})
	}
	tuning := func(item string, st Status, detail string) {
		out = append(out, Finding{Item: item, Status: st, Detail: detail, Tuning: true})
	}
	if id, _, _ := strings.Cut(f["os"], " "); id != "debian" && id != "ubuntu" {
		add("os", Warn, fmt.Sprintf("%s: labctl installs packages with apt on Debian and Ubuntu only", f["os"]))
	} else {
		add("os", OK, f["os"])
	}
	for _, p := range w.packages() {
		put := add
		if !slices.Contains(Packages, p) {
			put = tuning
		}
		if strings.HasSuffix(f["pkg."+p], "install ok installed") {
			put("package "+p, OK, "installed")
		} else {
			put("package "+p, Missing, "not installed")
		}
	}
	if w.Longhorn {
		out = append(out, assessLonghorn(f, dataPath)...)
	}
	return append(out, assessTuning(f, w)...)
}

// assessLonghorn is Longhorn's items but its packages.
func assessLonghorn(f Facts, dataPath string) []Finding {
	var out []Finding
	add := func(item string, st Status, detail string) {
		out = append(out, Finding{Item: item, Status: st, Detail: detail})
	}
	switch {
	case f["iscsid.active"] == "active" && f["iscsid.enabled"] == "enabled":
		add("iscsid", OK, "enabled and running")
	case f.kernelCannot("iscsi_tcp") != "":
		// Starting it would only wait out systemd's start timeout.
		add("iscsid", Warn, "cannot run: "+f.kernelCannot("iscsi_tcp"))
	default:
		add("iscsid", Missing, fmt.Sprintf("enabled=%s active=%s", orNone(f["iscsid.enabled"]), orNone(f["iscsid.active"])))
	}
	for _, m := range Modules {
		switch {
		case f["mod."+m] == "loaded":
			add("module "+m, OK, "loaded")
		case f.kernelCannot(m) != "":
			add("module "+m, Warn, f.kernelCannot(m))
		default:
			add("module "+m, Missing, "not loaded")
		}
	}
	persisted := strings.Fields(f["modules.persisted"])
	if containsAll(persisted, Modules) {
		add("modules at boot", OK, ModulesFile)
	} else {
		add("modules at boot", Missing, ModulesFile+" does not list "+strings.Join(Modules, " and "))
	}
	switch {
	case f["multipath.installed"] != "yes":
		add("multipath blacklist", OK, "multipath-tools not installed")
	case f["multipath.blacklisted"] == "yes":
		add("multipath blacklist", OK, "/etc/multipath.conf blacklists sd devices")
	default:
		add("multipath blacklist", Missing, "multipathd would claim Longhorn's sd devices")
	}
	if f["datapath"] == "yes" {
		add("data path", OK, dataPath)
	} else {
		add("data path", Missing, dataPath+" does not exist")
	}
	return out
}

// assessTuning is the profile's items.
func assessTuning(f Facts, w Want) []Finding {
	var out []Finding
	tuning := func(item string, st Status, detail string) {
		out = append(out, Finding{Item: item, Status: st, Detail: detail, Tuning: true})
	}
	if len(w.Sysctl) > 0 {
		file, _ := base64.StdEncoding.DecodeString(f["sysctl.file"])
		persisted := string(file) == w.SysctlConf()
		for _, k := range slices.Sorted(maps.Keys(w.Sysctl)) {
			live, want := strings.Join(strings.Fields(f["sysctl."+k]), " "), strings.Join(strings.Fields(w.Sysctl[k]), " ")
			switch {
			case live == "":
				tuning("sysctl "+k, Missing, "not readable at "+procSys(k)+" (no such setting on this kernel?)")
			case live != want:
				tuning("sysctl "+k, Missing, fmt.Sprintf("%s, want %s", live, want))
			case !persisted:
				tuning("sysctl "+k, Missing, live+" now, but "+SysctlFile+" does not persist it for the next boot")
			default:
				tuning("sysctl "+k, OK, live+", persisted in "+SysctlFile)
			}
		}
	}
	if w.EtcdMount != "" {
		mounted, disk, _ := strings.Cut(f["etcdmount.mounted"], " ")
		switch {
		case mounted != "yes":
			tuning("etcd data mount", Refused, w.EtcdMount+" is not a mount point: mount the disk meant for etcd there first (labctl never picks a disk)")
		case f["etcdmount.bound"] != "yes" && f["etcdmount.target"] != "":
			tuning("etcd data mount", Refused, fmt.Sprintf("%[1]s already holds %[2]s and is not %[3]s: mounting over it would hide a live etcd database. To move it: systemctl stop k3s; mkdir -p %[3]s; cp -a %[1]s/. %[3]s/; rm -rf %[1]s/*; then run labctl again", EtcdTarget, strings.TrimSpace(f["etcdmount.target"]), w.EtcdSource()))
		case f["etcdmount.bound"] != "yes":
			tuning("etcd data mount", Missing, fmt.Sprintf("%s is not bind-mounted from %s (%s)", EtcdTarget, w.EtcdSource(), disk))
		case f["etcdmount.fstab"] != "yes" || f["etcdmount.unit"] != "yes":
			tuning("etcd data mount", Missing, fmt.Sprintf("%s is mounted from %s now, but /etc/fstab or K3s's unit does not keep it so at boot", EtcdTarget, w.EtcdSource()))
		default:
			tuning("etcd data mount", OK, fmt.Sprintf("%s from %s (%s), in /etc/fstab, K3s waits for it", EtcdTarget, w.EtcdSource(), disk))
		}
	}
	if j := w.Journald; j != nil {
		file, _ := base64.StdEncoding.DecodeString(f["journald.file"])
		switch {
		case len(file) == 0:
			tuning("journald", Missing, JournaldFile+" is absent (want "+w.journaldSettings()+")")
		case string(file) != w.JournaldConf():
			tuning("journald", Missing, JournaldFile+" differs from the profile (want "+w.journaldSettings()+")")
		case j.Persistent && f["journald.persistent"] != "yes":
			tuning("journald", Missing, "no journal under /var/log/journal: the logs are lost at reboot")
		default:
			tuning("journald", OK, w.journaldSettings())
		}
	}
	return out
}

// Fix is one change that brings a host closer to passing.
type Fix struct {
	Item string
	// Desc says what it does, for plans and events.
	Desc string
	// Script runs as root.
	Script string
	// KernelLimited fixes may fail only because the kernel lacks support;
	// such a failure is reported as a warning, not an error.
	KernelLimited bool
}

// Fixes lists the changes for every Missing finding. With nil facts (a plan
// that observed nothing) it lists them all, as for a fresh host.
func Fixes(f Facts, w Want) []Fix {
	dataPath := w.DataPath
	missing := map[string]bool{}
	if f == nil {
		for _, it := range allItems(w) {
			missing[it] = true
		}
	} else {
		for _, fd := range Assess(f, w) {
			missing[fd.Item] = fd.Status == Missing
		}
	}
	var out []Fix
	var pkgs []string
	for _, p := range w.packages() {
		if missing["package "+p] {
			pkgs = append(pkgs, p)
		}
	}
	if len(pkgs) > 0 {
		out = append(out, Fix{Item: "packages", Desc: "install packages " + strings.Join(pkgs, ", "),
			Script: "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq --no-install-recommends " + strings.Join(pkgs, " ")})
	}
	if missing["modules at boot"] {
		out = append(out, Fix{Item: "modules at boot", Desc: "persist kernel modules " + strings.Join(Modules, ", ") + " in " + ModulesFile,
			Script: fmt.Sprintf("mkdir -p %s && printf '%%s\\n' %s > %s", path.Dir(ModulesFile), strings.Join(Modules, " "), ModulesFile)})
	}
	for _, m := range Modules {
		if missing["module "+m] {
			out = append(out, Fix{Item: "module " + m, Desc: "load kernel module " + m, Script: "modprobe " + m, KernelLimited: true})
		}
	}
	if missing["iscsid"] {
		out = append(out, Fix{Item: "iscsid", Desc: "enable and start iscsid", Script: iscsidScript, KernelLimited: true})
	}
	if missing["multipath blacklist"] {
		desc := `blacklist devnode "^sd[a-z0-9]+" in /etc/multipath.conf and reload multipathd`
		if f == nil {
			desc += " (if multipath-tools is installed)"
		}
		out = append(out, Fix{Item: "multipath blacklist", Desc: desc, Script: blacklistScript})
	}
	if missing["data path"] {
		out = append(out, Fix{Item: "data path", Desc: "create the Longhorn data path " + dataPath, Script: "mkdir -p " + shq(dataPath)})
	}
	var sysctls []string
	for _, k := range slices.Sorted(maps.Keys(w.Sysctl)) {
		if missing["sysctl "+k] {
			sysctls = append(sysctls, k+"="+w.Sysctl[k])
		}
	}
	if len(sysctls) > 0 {
		out = append(out, Fix{Item: "sysctl", Desc: fmt.Sprintf("write %s and apply it now (%s)", SysctlFile, strings.Join(sysctls, ", ")), Script: sysctlScript(w)})
	}
	if missing["etcd data mount"] {
		out = append(out, Fix{Item: "etcd data mount", Desc: fmt.Sprintf("bind-mount %s at %s, record it in /etc/fstab, and have K3s wait for it at boot", w.EtcdSource(), EtcdTarget), Script: etcdMountScript(w)})
	}
	if missing["journald"] {
		out = append(out, Fix{Item: "journald", Desc: fmt.Sprintf("write %s (%s) and restart systemd-journald", JournaldFile, w.journaldSettings()), Script: journaldScript(w)})
	}
	return out
}

// sysctlScript writes the drop-in and applies each setting now, through
// /proc/sys (systemd-sysctl reads the drop-in at boot); a setting the
// kernel refuses names itself.
func sysctlScript(w Want) string {
	var b strings.Builder
	fmt.Fprintf(&b, "set -e\nmkdir -p %s\ncat > %s.labctl-new <<'LABCTL'\n%sLABCTL\nmv %s.labctl-new %s\n", path.Dir(SysctlFile), SysctlFile, w.SysctlConf(), SysctlFile, SysctlFile)
	for _, k := range slices.Sorted(maps.Keys(w.Sysctl)) {
		fmt.Fprintf(&b, "echo %s > %s || { echo \"sysctl %s: the kernel refused %s\" >&2; exit 1; }\n", shq(w.Sysctl[k]), procSys(k), k, shq(w.Sysctl[k]))
	}
	return b.String()
}

// etcdMountScript binds the etcd disk's directory at K3s's server/db;
// it refuses a mount point that is not one, and a target that already
// holds data (mounting over it would hide a live database).
func etcdMountScript(w Want) string {
	return fmt.Sprintf(`set -e
M=%[1]s S=%[2]s T=%[3]s
mountpoint -q "$M" || { echo "$M is not a mount point: mount the disk meant for etcd there first (labctl never picks a disk)" >&2; exit 1; }
if [ ! -d "$T" ] || [ ! -d "$S" ] || [ "$(stat -c %%d:%%i "$T")" != "$(stat -c %%d:%%i "$S")" ]; then
  if [ -n "$(ls -A "$T" 2>/dev/null)" ]; then
    echo "$T already holds $(ls -A "$T" | head -n 5 | tr '\n' ' ')and is not $S: mounting over it would hide a live etcd database" >&2
    exit 1
  fi
  mkdir -p "$S" "$T"
  chmod 700 "$S"
  mount --bind "$S" "$T"
fi
line=%[4]s
if ! grep -qxF "$line" /etc/fstab; then
  grep -v " $T none bind" /etc/fstab > /etc/fstab.labctl-new || true
  echo "$line" >> /etc/fstab.labctl-new
  cat /etc/fstab.labctl-new > /etc/fstab && rm /etc/fstab.labctl-new
fi
mkdir -p %[5]s
cat > %[6]s <<'LABCTL'
%[7]sLABCTL
systemctl daemon-reload`, shq(w.EtcdMount), shq(w.EtcdSource()), EtcdTarget, shq(w.EtcdFstabLine()), path.Dir(EtcdUnitDropIn), EtcdUnitDropIn, w.etcdDropIn())
}

// journaldScript writes the drop-in, restarts journald and, for
// persistent storage, waits for the journal file on disk.
func journaldScript(w Want) string {
	s := fmt.Sprintf("set -e\nmkdir -p %s\ncat > %s <<'LABCTL'\n%sLABCTL\n", path.Dir(JournaldFile), JournaldFile, w.JournaldConf())
	if w.Journald.Persistent {
		s += "mkdir -p /var/log/journal\nsystemd-tmpfiles --create --prefix /var/log/journal >/dev/null 2>&1 || true\n"
	}
	s += "systemctl restart systemd-journald\n"
	if w.Journald.Persistent {
		s += `journalctl --flush >/dev/null 2>&1 || true
for i in 1 2 3 4 5; do
  ls /var/log/journal/*/system.journal >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "systemd-journald writes no journal under /var/log/journal:" >&2
journalctl -u systemd-journald -n 3 --no-pager -o cat >&2
exit 1
`
	}
	return s
}

// iscsidScript starts iscsid and checks that it stays up: systemd can
// report a start that the daemon then abandons (no iSCSI in the kernel);
// the journal's last lines say why.
const iscsidScript = `systemctl enable --now iscsid
for i in 1 2 3 4 5; do
  sleep 1
  systemctl is-active --quiet iscsid && exit 0
done
journalctl -u iscsid -n 3 --no-pager -o cat >&2
exit 1`

// blacklistScript adds the devnode line to an existing blacklist section
// or appends one, then has a running multipathd reload its configuration
// (one that is not running reads it when it starts).
const blacklistScript = `set -e
f=/etc/multipath.conf
touch "$f"
if grep -Fq '` + BlacklistLine + `' "$f"; then exit 0; fi
if grep -Eq '^[[:space:]]*blacklist[[:space:]]*\{' "$f"; then
  sed -i -E '0,/^[[:space:]]*blacklist[[:space:]]*\{/s//blacklist {\n    ` + BlacklistLine + `/' "$f"
else
  printf '\nblacklist {\n    %s\n}\n' '` + BlacklistLine + `' >> "$f"
fi
systemctl try-reload-or-restart multipathd`

func allItems(w Want) []string {
	var items []string
	if w.Longhorn {
		items = append(items, "iscsid", "modules at boot", "multipath blacklist", "data path")
		for _, m := range Modules {
			items = append(items, "module "+m)
		}
	}
	for _, p := range w.packages() {
		items = append(items, "package "+p)
	}
	for k := range w.Sysctl {
		items = append(items, "sysctl "+k)
	}
	if w.Journald != nil {
		items = append(items, "journald")
	}
	if w.EtcdMount != "" {
		items = append(items, "etcd data mount")
	}
	return items
}

// Apply runs one fix as root. A kernel-limited fix that fails because the
// kernel lacks support returns a *KernelWarning instead of an error.
func Apply(ctx context.Context, run Run, f Facts, fix Fix) error {
	_, err := run(ctx, fix.Script, true)
	if err == nil {
		return nil
	}
	if fix.KernelLimited && f != nil {
		mod := "iscsi_tcp"
		if strings.HasPrefix(fix.Item, "module ") {
			mod = strings.TrimPrefix(fix.Item, "module ")
		}
		if why := f.kernelCannot(mod); why != "" {
			return &KernelWarning{Item: fix.Item, Why: why, Err: err}
		}
	}
	return fmt.Errorf("%s: %w", fix.Desc, err)
}

// KernelWarning is a fix the kernel made impossible.
type KernelWarning struct {
	Item, Why string
	Err       error
}

func (w *KernelWarning) Error() string {
	return fmt.Sprintf("%s: %s; Longhorn will not work on this host until the kernel provides it", w.Item, w.Why)
}

func (w *KernelWarning) Unwrap() error { return w.Err }

func containsAll(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

package verify

import (
	"fmt"
	"math"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/labctl/labctl/facts"
	"github.com/labctl/labctl/profiles"
	"github.com/labctl/labctl/provision/k3s"
	"github.com/labctl/labctl/provision/prereq"
)

// Thresholds of the host checks.
const (
	// DiskWarn and DiskFail are the used share of a filesystem, percent.
	DiskWarn = 80
	DiskFail = 95
	// InotifyWatches and InotifyInstances are what a node running many
	// pods needs (the kernel's defaults, 8192 and 128, give "too many
	// open files").
	InotifyWatches   = 524288
	InotifyInstances = 512
	// CertWarn is when K3s itself starts warning about an expiring
	// certificate; CertFail leaves too little time to act.
	CertWarn = 120 * 24 * time.Hour
	CertFail = 14 * 24 * time.Hour
	// LatencyWarn is etcd's guidance for the 99th percentile WAL fsync.
	LatencyWarn = 10 * time.Millisecond
	// ClockWarn: etcd warns about a clock difference over a second.
	ClockWarn = time.Second
)

// probe is the O_DSYNC write probe: writes of a WAL entry's typical size
// beside etcd's data, the way etcd's own guidance measures a disk (fio
// with fdatasync), removed at once.
const (
	probeWrites = 100
	probeBytes  = 2300
	probeFile   = k3s.DBDir + "/.labctl-latency-probe"
	metricsURL  = "http://127.0.0.1:2381/metrics"
)

// HostScript reads, read-only except for the latency probe's own file,
// everything verify checks on a host, in one command: the prerequisites,
// K3s, the inotify limits, free disk, where etcd's data lives and how
// fast it writes, the clock and the certificates' expiry.
func HostScript(w prereq.Want) string {
	var b strings.Builder
	b.WriteString("echo \"clock.start=$(date +%s%N)\"\n")
	b.WriteString(prereq.GatherScript(w))
	b.WriteString(k3s.ObserveScript + "\n")
	b.WriteString(`echo "inotify.watches=$(cat /proc/sys/fs/inotify/max_user_watches)"
echo "inotify.instances=$(cat /proc/sys/fs/inotify/max_user_instances)"
`)
	paths := []string{"/"}
	if w.DataPath != "" {
		paths = append(paths, w.DataPath)
	}
	for _, p := range paths {
		fmt.Fprintf(&b, "[ -d %[1]s ] && df -Pk %[1]s | awk 'NR==2 {print \"df.%[2]s=\" $2 \" \" $3 \" \" $4 \" \" $1}'\n", k3s.ShellQuote(p), p)
	}
	fmt.Fprintf(&b, `if [ -d %[1]s/etcd ]; then
  src=$(findmnt -n -o SOURCE -T %[1]s/etcd 2>/dev/null); echo "etcd.mount=$src $(findmnt -n -o FSTYPE,TARGET -T %[1]s/etcd 2>/dev/null)"
  dev=$(lsblk -no PKNAME "$src" 2>/dev/null | head -n 1); [ -n "$dev" ] || dev=$src
  echo "etcd.rota=$(lsblk -dno ROTA "/dev/${dev#/dev/}" 2>/dev/null | tr -d ' ')"
  df -Pk %[1]s | awk 'NR==2 {print "df.%[1]s=" $2 " " $3 " " $4 " " $1}'
  curl -s --max-time 2 %[2]s 2>/dev/null | sed -n 's/^etcd_disk_wal_fsync_duration_seconds_bucket{le="\([^"]*\)"} \(.*\)$/walfsync.\1=\2/p'
  s=$(date +%%s%%N); if dd if=/dev/zero of=%[3]s bs=%[4]d count=%[5]d oflag=dsync 2>/dev/null; then e=$(date +%%s%%N); echo "dsync.ns=$((e - s))"; fi; rm -f %[3]s
fi
for f in %[6]s/server/tls/*.crt %[6]s/server/tls/etcd/*.crt %[6]s/agent/*.crt; do
  [ -f "$f" ] && echo "cert.$f=$(openssl x509 -noout -enddate -in "$f" 2>/dev/null | cut -d= -f2)"
done
echo "clock=$(date +%%s%%N)"
`, k3s.DBDir, metricsURL, probeFile, probeBytes, probeWrites, k3s.DataDir)
	return b.String()
}

// Disk is one filesystem as df gives it.
type Disk struct {
	Path   string `json:"path"`
	Device string `json:"device"`
	SizeKB int64  `json:"sizeKB"`
	UsedKB int64  `json:"usedKB"`
	FreeKB int64  `json:"freeKB"`
}

// UsedPercent is the used share, rounded up as df does.
func (d Disk) UsedPercent() int {
	total := d.UsedKB + d.FreeKB
	if total == 0 {
		return 0
	}
	return int(math.Ceil(float64(d.UsedKB) * 100 / float64(total)))
}

// Cert is one certificate file and its end of validity.
type Cert struct {
	Path     string    `json:"path"`
	NotAfter time.Time `json:"notAfter"`
}

// Host is what HostScript read on one node.
type Host struct {
	Prereq prereq.Facts `json:"-"`
	K3s    facts.K3s    `json:"k3s"`
	// K3sErr is why K3s's part did not parse.
	K3sErr           string `json:"k3sError,omitempty"`
	InotifyWatches   int    `json:"inotifyWatches"`
	InotifyInstances int    `json:"inotifyInstances"`
	Disks            []Disk `json:"disks"`
	// EtcdMount is "source fstype target" of etcd's data; EtcdRotational
	// is lsblk's ROTA of its disk ("1" a spinning disk, "" unknown).
	EtcdMount      string `json:"etcdMount,omitempty"`
	EtcdRotational string `json:"etcdRotational,omitempty"`
	// WALFsync is etcd's cumulative WAL fsync histogram (seconds → count).
	WALFsync map[float64]float64 `json:"-"`
	// Probe is the mean duration of one O_DSYNC write, 0 when not probed.
	Probe time.Duration `json:"probe,omitempty"`
	Certs []Cert        `json:"certs,omitempty"`
	// Clock is the host's time when the script ended; Sent and Received
	// bound the command on this machine's clock.
	Clock, Sent, Received time.Time
	// started is the host's time when the script began.
	started time.Time
}

// clockWindow is when, on this machine's clock, the host's Clock was
// read, as a midpoint and a half-width: after the command was sent plus
// the script's own run time, before its output arrived.
func (h Host) clockWindow() (mid time.Time, err time.Duration) {
	earliest := h.Sent
	if !h.started.IsZero() && h.Clock.After(h.started) {
		earliest = earliest.Add(h.Clock.Sub(h.started))
	}
	if earliest.After(h.Received) {
		earliest = h.Received
	}
	half := h.Received.Sub(earliest) / 2
	return earliest.Add(half), half
}

// ParseHost reads HostScript's output.
func ParseHost(out string) (Host, error) {
	h := Host{Prereq: prereq.Facts{}, WALFsync: map[float64]float64{}}
	var k3sLines []string
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch {
		case k == "inotify.watches":
			h.InotifyWatches, _ = strconv.Atoi(v)
		case k == "inotify.instances":
			h.InotifyInstances, _ = strconv.Atoi(v)
		case strings.HasPrefix(k, "df."):
			f := strings.Fields(v)
			if len(f) < 4 {
				continue
			}
			d := Disk{Path: strings.TrimPrefix(k, "df."), Device: f[3]}
			d.SizeKB, _ = strconv.ParseInt(f[0], 10, 64)
			d.UsedKB, _ = strconv.ParseInt(f[1], 10, 64)
			d.FreeKB, _ = strconv.ParseInt(f[2], 10, 64)
			h.Disks = append(h.Disks, d)
		case k == "etcd.mount":
			h.EtcdMount = v
		case k == "etcd.rota":
			h.EtcdRotational = v
		case strings.HasPrefix(k, "walfsync."):
			le := strings.TrimPrefix(k, "walfsync.")
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				continue
			}
			if le == "+Inf" {
				h.WALFsync[math.Inf(1)] = n
			} else if f, err := strconv.ParseFloat(le, 64); err == nil {
				h.WALFsync[f] = n
			}
		case k == "dsync.ns":
			if ns, err := strconv.ParseInt(v, 10, 64); err == nil && ns > 0 {
				h.Probe = time.Duration(ns / probeWrites)
			}
		case strings.HasPrefix(k, "cert."):
			if t, err := time.Parse("Jan _2 15:04:05 2006 MST", v); err == nil {
				h.Certs = append(h.Certs, Cert{Path: strings.TrimPrefix(k, "cert."), NotAfter: t})
			}
		case k == "clock":
			if ns, err := strconv.ParseInt(v, 10, 64); err == nil {
				h.Clock = time.Unix(0, ns)
			}
		case k == "clock.start":
			if ns, err := strconv.ParseInt(v, 10, 64); err == nil {
				h.started = time.Unix(0, ns)
			}
		case isPrereqKey(k):
			h.Prereq[k] = v
		default:
			k3sLines = append(k3sLines, line)
		}
	}
	if h.Prereq["os"] == "" || h.Clock.IsZero() {
		return h, fmt.Errorf("verify: unexpected host output %q", firstLine(out))
	}
	var err error
	h.K3s, err = k3s.ParseObservation(strings.Join(k3sLines, "\n"), "")
	if err != nil {
		h.K3sErr = err.Error()
	}
	return h, nil
}

func isPrereqKey(k string) bool {
	switch k {
	case "os", "kernel", "datapath":
		return true
	}
	for _, p := range []string{"pkg.", "mod.", "iscsid.", "modules.", "multipath.", "sysctl.", "journald.", "etcdmount."} {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	if len(l) > 120 {
		l = l[:120] + "…"
	}
	return l
}

// WALp99 is the 99th percentile of the WAL fsync histogram (the upper
// bound of the bucket it falls in) and the number of fsyncs; ok is false
// without samples.
func (h Host) WALp99() (time.Duration, float64, bool) {
	les := make([]float64, 0, len(h.WALFsync))
	for le := range h.WALFsync {
		les = append(les, le)
	}
	sort.Float64s(les)
	if len(les) == 0 {
		return 0, 0, false
	}
	total := h.WALFsync[les[len(les)-1]]
	if total == 0 {
		return 0, 0, false
	}
	for _, le := range les {
		if h.WALFsync[le] >= 0.99*total {
			if math.IsInf(le, 1) {
				le = les[max(0, len(les)-2)]
			}
			return time.Duration(le * float64(time.Second)), total, true
		}
	}
	return 0, total, false
}

// HostChecks are the checks of one node's host facts.
func HostChecks(s *profiles.Spec, n profiles.Node, h Host, now time.Time) Report {
	r := PrerequisiteChecks(s, n, h.Prereq)
	for _, d := range h.Disks {
		name := "disk " + d.Path
		pct := d.UsedPercent()
		obs := fmt.Sprintf("%d%% used, %s free of %s (%s)", pct, kib(d.FreeKB), kib(d.SizeKB), d.Device)
		switch {
		case pct >= DiskFail:
			r.add(GroupHosts, name, n.Name, Fail, obs, fmt.Sprintf("under %d%% used", DiskWarn))
		case pct >= DiskWarn:
			r.add(GroupHosts, name, n.Name, Warn, obs, fmt.Sprintf("under %d%% used", DiskWarn))
		default:
			r.ok(GroupHosts, name, n.Name, obs)
		}
	}
	ino := fmt.Sprintf("max_user_watches %d, max_user_instances %d", h.InotifyWatches, h.InotifyInstances)
	if h.InotifyWatches < InotifyWatches || h.InotifyInstances < InotifyInstances {
		r.add(GroupHosts, "inotify limits", n.Name, Warn, ino+": pods fail with \"too many open files\"",
			fmt.Sprintf("at least %d and %d (fs.inotify.* in /etc/sysctl.d)", InotifyWatches, InotifyInstances))
	} else {
		r.ok(GroupHosts, "inotify limits", n.Name, ino)
	}
	return r
}

// PrerequisiteChecks are preflight's items on one machine: what Longhorn
// needs there, and the profile's tuning (a k3d Docker host has only the
// tuning).
func PrerequisiteChecks(s *profiles.Spec, n profiles.Node, f prereq.Facts) Report {
	var r Report
	if s.Storage.Longhorn == nil && s.Hosts == nil && s.K3s.EtcdMount == "" {
		return r
	}
	for _, fd := range prereq.Assess(f, prereq.WantFor(s, n)) {
		if s.Storage.Longhorn == nil && !fd.Tuning {
			continue
		}
		st := OK
		switch fd.Status {
		case prereq.Missing, prereq.Refused:
			st = Fail
		case prereq.Warn:
			st = Warn
		}
		want := ""
		if st != OK {
			want = "in place (labctl create fixes what labctl can)"
		}
		r.add(GroupHosts, fd.Item, n.Name, st, fd.Detail, want)
	}
	return r
}

// K3sChecks are the checks of the K3s one node runs.
func K3sChecks(s *profiles.Spec, n profiles.Node, h Host, now time.Time) Report {
	var r Report
	k := h.K3s
	switch {
	case h.K3sErr != "":
		r.add(GroupK3s, "service", n.Name, Fail, h.K3sErr, "k3s observed")
		return r
	case !k.Installed:
		r.add(GroupK3s, "service", n.Name, Fail, k.Reason(), "installed and active")
		return r
	case !k.Active:
		r.add(GroupK3s, "service", n.Name, Fail, k.Reason(), "active")
	default:
		r.ok(GroupK3s, "service", n.Name, k.Reason())
	}
	if k.Version == s.K3s.Version {
		r.ok(GroupK3s, "version", n.Name, k.Version)
	} else {
		r.add(GroupK3s, "version", n.Name, Fail, k.Version+" (drift: labctl upgrade brings it to the profile's)", s.K3s.Version)
	}
	var drift []string
	for _, c := range k3s.ConfigDrift(k.Config, k3s.NodeConfig(s, n, nil)) {
		drift = append(drift, c.String())
	}
	if len(drift) == 0 {
		r.ok(GroupK3s, "config.yaml", n.Name, k3s.ConfigPath+" as the profile renders it")
	} else {
		r.add(GroupK3s, "config.yaml", n.Name, Fail, strings.Join(drift, "; "), k3s.ConfigPath+" as the profile renders it")
	}
	r.Merge(certChecks(n, h, now))
	return r
}

func certChecks(n profiles.Node, h Host, now time.Time) Report {
	var r Report
	if len(h.Certs) == 0 {
		r.add(GroupK3s, "certificates", n.Name, Warn, "no certificate found under "+k3s.DataDir, fmt.Sprintf("valid for over %d days", int(CertWarn.Hours()/24)))
		return r
	}
	certs := slices.Clone(h.Certs)
	slices.SortFunc(certs, func(a, b Cert) int { return a.NotAfter.Compare(b.NotAfter) })
	soonest := certs[0]
	left := soonest.NotAfter.Sub(now)
	obs := fmt.Sprintf("%d certificates; the first to expire, %s, expires %s (in %d days)", len(certs), path.Base(soonest.Path), soonest.NotAfter.UTC().Format("2006-01-02"), int(math.Floor(left.Hours()/24)))
	want := fmt.Sprintf("valid for over %d days (K3s renews them when it restarts within 120 days of expiry: systemctl restart %s)", int(CertWarn.Hours()/24), unitOf(h.K3s))
	switch {
	case left < CertFail:
		r.add(GroupK3s, "certificates", n.Name, Fail, obs, want)
	case left < CertWarn:
		r.add(GroupK3s, "certificates", n.Name, Warn, obs, want)
	default:
		r.ok(GroupK3s, "certificates", n.Name, obs)
	}
	return r
}

func unitOf(k facts.K3s) string {
	if k.Unit == "" {
		return "k3s"
	}
	return k.Unit
}

// EtcdDiskChecks are where a server's etcd data lives and how fast it
// writes.
func EtcdDiskChecks(n profiles.Node, h Host) Report {
	var r Report
	if h.EtcdMount == "" {
		r.add(GroupEtcd, "data", n.Name, Fail, "no etcd data under "+k3s.DBDir+"/etcd", "a member's data")
		return r
	}
	obs := h.EtcdMount
	for _, d := range h.Disks {
		if d.Path == k3s.DBDir {
			obs += fmt.Sprintf(", %d%% used", d.UsedPercent())
		}
	}
	switch h.EtcdRotational {
	case "1":
		r.add(GroupEtcd, "data", n.Name, Warn, obs+", on a rotational disk", "an SSD or NVMe disk (etcd fsyncs every write)")
	case "0":
		r.ok(GroupEtcd, "data", n.Name, obs+", not rotational")
	default:
		r.ok(GroupEtcd, "data", n.Name, obs)
	}
	want := fmt.Sprintf("under %s (etcd's guidance for the 99th percentile)", LatencyWarn)
	if p99, count, ok := h.WALp99(); ok {
		obs := fmt.Sprintf("WAL fsync p99 ≤ %s over %.0f fsyncs (etcd's metric)", p99, count)
		if h.Probe > 0 {
			obs += fmt.Sprintf("; O_DSYNC probe %s per %d B write", h.Probe.Round(time.Microsecond), probeBytes)
		}
		if p99 > LatencyWarn {
			r.add(GroupEtcd, "write latency", n.Name, Warn, obs, want)
		} else {
			r.ok(GroupEtcd, "write latency", n.Name, obs)
		}
		return r
	}
	if h.Probe == 0 {
		r.add(GroupEtcd, "write latency", n.Name, Warn, "neither etcd's metric ("+metricsURL+") nor the O_DSYNC probe answered", want)
		return r
	}
	obs = fmt.Sprintf("O_DSYNC probe: %s per %d B write (mean of %d, beside the data; etcd's metric not exposed)", h.Probe.Round(time.Microsecond), probeBytes, probeWrites)
	if h.Probe > LatencyWarn {
		r.add(GroupEtcd, "write latency", n.Name, Warn, obs, want)
	} else {
		r.ok(GroupEtcd, "write latency", n.Name, obs)
	}
	return r
}

// ClockChecks compare the hosts' clocks with this machine's, each
// measured within the round trip of its command: the spread between
// nodes is what etcd minds.
func ClockChecks(hosts map[string]Host) Report {
	var r Report
	type off struct {
		name     string
		off, err time.Duration
	}
	var offs []off
	for name, h := range hosts {
		if h.Clock.IsZero() || h.Sent.IsZero() {
			continue
		}
		mid, half := h.clockWindow()
		offs = append(offs, off{name, h.Clock.Sub(mid), half})
	}
	if len(offs) < 2 {
		return r
	}
	slices.SortFunc(offs, func(a, b off) int { return int(a.off - b.off) })
	lo, hi := offs[0], offs[len(offs)-1]
	spread := hi.off - lo.off
	slack := hi.err + lo.err
	obs := fmt.Sprintf("largest difference %s (%s ahead of %s), measured within ±%s", spread.Round(time.Millisecond), hi.name, lo.name, slack.Round(time.Millisecond))
	if spread-slack > ClockWarn {
		r.add(GroupHosts, "clock", "cluster", Warn, obs, "under 1s between nodes (NTP on every node)")
	} else {
		r.ok(GroupHosts, "clock", "cluster", obs)
	}
	return r
}

// kib renders a size given in KiB.
func kib(n int64) string {
	const unit = 1024
	v := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		if v < unit || u == "TiB" {
			if u == "KiB" {
				return fmt.Sprintf("%d %s", n, u)
			}
			return fmt.Sprintf("%.1f %s", v, u)
		}
		v /= unit
	}
	return ""
}

package k3s

import (
	"fmt"
	"regexp"
	"strconv"
)

// Version is a K3s release: v<major>.<minor>.<patch>+k3s<n>.
type Version struct {
	Major, Minor, Patch, K3s int
	raw                      string
}

var versionRE = regexp.MustCompile(`^v(\d+)\.(\d+)\.(\d+)\+k3s(\d+)$`)

// ParseVersion reads a K3s release name.
func ParseVersion(s string) (Version, error) {
	m := versionRE.FindStringSubmatch(s)
	if m == nil {
		return Version{}, fmt.Errorf("%q is not a K3s release (v1.33.4+k3s1)", s)
	}
	n := make([]int, 4)
	for i := range n {
		n[i], _ = strconv.Atoi(m[i+1])
	}
	return Version{n[0], n[1], n[2], n[3], s}, nil
}

func (v Version) String() string { return v.raw }

// Compare is -1, 0 or 1 as v is older than, the same as or newer than w.
func (v Version) Compare(w Version) int {
	for _, d := range [][2]int{{v.Major, w.Major}, {v.Minor, w.Minor}, {v.Patch, w.Patch}, {v.K3s, w.K3s}} {
		switch {
		case d[0] < d[1]:
			return -1
		case d[0] > d[1]:
			return 1
		}
	}
	return 0
}

// UpgradePath says whether K3s may go from have to want in one step:
// never backwards (etcd and the API's stored objects do not downgrade),
// and at most one minor release at a time (Kubernetes's version skew
// policy: a control plane upgrades minor by minor).
func UpgradePath(have, want string) error {
	h, err := ParseVersion(have)
	if err != nil {
		return err
	}
	w, err := ParseVersion(want)
	if err != nil {
		return err
	}
	switch {
	case w.Compare(h) < 0:
		return fmt.Errorf("%s runs, the profile asks %s: a downgrade, which K3s does not support (restore a snapshot taken before the upgrade instead)", h, w)
	case w.Major != h.Major:
		return fmt.Errorf("%s runs, the profile asks %s: another major version", h, w)
	case w.Minor > h.Minor+1:
		return fmt.Errorf("%s runs, the profile asks %s: that skips %d minor release(s); upgrade through v%d.%d first (one minor release at a time)", h, w, w.Minor-h.Minor-1, h.Major, h.Minor+1)
	}
	return nil
}

package k3s

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// EtcdScript runs under sh and its questions are in flight at once: the
// fake curl for the first member answers only once the last member's
// question has begun (asked one by one, it would give up), and a member
// that does not answer is reported as such. The answers come back in the
// order ParseEtcd reads.
func TestEtcdScriptAsksAllMembersAtOnce(t *testing.T) {
	dir := t.TempDir()
	marks := filepath.Join(dir, "marks")
	if err := os.Mkdir(marks, 0o755); err != nil {
		t.Fatal(err)
	}
	// The URL is the argument after POST. The first member waits (up to
	// 10 s, a deadlock guard, not a measure) for the last one's mark.
	curl := `#!/bin/sh
while [ "$1" != POST ]; do shift; done; url=$2
case "$url" in
*member/list) echo '{"header":{"cluster_id":"1"},"members":[{"ID":"10","name":"a-1","peerURLs":["https://10.9.0.1:2380"]},{"ID":"11","name":"b-1","peerURLs":["https://10.9.0.2:2380"]},{"ID":"12","name":"c-1","peerURLs":["https://10.9.0.3:2380"]}]}' ;;
*10.9.0.1:*) i=0; while [ ! -e "$MARKS/last" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  if [ -e "$MARKS/last" ]; then echo '{"header":{"member_id":"10"},"leader":"10"}'; else echo 'curl: (28) asked after the others'; fi ;;
*10.9.0.2:*) echo 'curl: (7) Failed to connect' ;;
*10.9.0.3:*) touch "$MARKS/last"; echo '{"header":{"member_id":"12"},"leader":"10"}' ;;
esac
`
	if err := os.WriteFile(filepath.Join(dir, "curl"), []byte(curl), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", EtcdScript([]string{"10.9.0.1", "10.9.0.2", "10.9.0.3"}))
	cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"), "MARKS="+marks)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	e, err := ParseEtcd(string(out), "a")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	states := []string{}
	for _, a := range []string{"10.9.0.1", "10.9.0.2", "10.9.0.3"} {
		m, ok := e.At(a)
		if !ok {
			t.Fatalf("no member at %s:\n%s", a, out)
		}
		states = append(states, a+" healthy="+map[bool]string{true: "yes", false: "no"}[m.Healthy])
	}
	if got := strings.Join(states, ", "); got != "10.9.0.1 healthy=yes, 10.9.0.2 healthy=no, 10.9.0.3 healthy=yes" || e.Leader != "a" {
		t.Errorf("members: %s; leader %q\n%s", got, e.Leader, out)
	}
	if left, _ := filepath.Glob(filepath.Join(os.TempDir(), "tmp.*", "members")); len(left) > 0 {
		t.Errorf("the script left its answers behind: %v", left)
	}
}

package commands

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/labctl/labctl/internal/dnstest"
	"github.com/labctl/labctl/profiles"
)

// --dns-server is asked instead of the system resolver: a name resolves
// to exactly what that server says, an unknown name does not resolve.
func TestResolveAllAsksTheGivenServer(t *testing.T) {
	dns := dnstest.New(t)
	dns.Set("apps.lab.test", "192.0.2.10", "192.0.2.11")
	s := &profiles.Spec{DNS: profiles.DNS{Domain: "lab.test", Records: []profiles.DNSRecord{
		{Name: "apps.lab.test", Targets: []string{"192.0.2.10", "192.0.2.11"}},
		{Name: "gone.lab.test", Targets: []string{"192.0.2.12"}},
	}}}
	got := resolveAll(context.Background(), s, dns.Addr)
	if a := got["apps.lab.test"]; a.Err != "" || !slices.Equal(slices.Sorted(slices.Values(a.Addrs)), []string{"192.0.2.10", "192.0.2.11"}) {
		t.Errorf("apps: %+v", a)
	}
	if a := got["gone.lab.test"]; a.Err == "" || len(a.Addrs) != 0 {
		t.Errorf("gone: %+v", a)
	}
}

// Any HTTP answer counts (Traefik's 404 without a route), a closed port
// does not.
func TestHTTPAnswersCountAnyResponse(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	_ = l.Close()
	open := strings.TrimPrefix(srv.URL, "http://")
	got := httpAnswersAt(context.Background(), []string{open, closed})
	if got[open] != "" {
		t.Errorf("%s: %q", open, got[open])
	}
	if !strings.Contains(got[closed], "refused") {
		t.Errorf("%s: %q", closed, got[closed])
	}
}

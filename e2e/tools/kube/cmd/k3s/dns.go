package main

import (
	"bufio"
	"context"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// clusterDNS stands in for the CoreDNS that K3s deploys: on every node it
// answers A queries for <service>.<namespace>.svc.cluster.local with the
// Service's cluster IP (NXDOMAIN for unknown names in the cluster domain)
// and forwards everything else to the node's own resolver. The kubelet
// gives pods the node's IP as their nameserver (K3s: the kube-dns Service
// at .10 of the service CIDR). Not modelled: headless Services, pod and
// SRV records, the coredns ConfigMap's NodeHosts.
type clusterDNS struct {
	mu       sync.RWMutex
	services map[string][4]byte // "svc.ns.svc.cluster.local." -> IP
	upstream string
}

const clusterDomain = "cluster.local."

func upstreamResolver() string {
	f, err := os.Open("/etc/resolv.conf")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) >= 2 && fields[0] == "nameserver" {
			return net.JoinHostPort(fields[1], "53")
		}
	}
	return ""
}

// serveDNS listens on addr:53 (UDP) until ctx ends.
func serveDNS(ctx context.Context, cs kubernetes.Interface, addr string) error {
	d := &clusterDNS{services: map[string][4]byte{}, upstream: upstreamResolver()}
	pc, err := net.ListenPacket("udp", net.JoinHostPort(addr, "53"))
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); _ = pc.Close() }()
	go d.watch(ctx, cs)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := append([]byte(nil), buf[:n]...)
			go func() {
				if resp := d.answer(q); resp != nil {
					_, _ = pc.WriteTo(resp, from)
				}
			}()
		}
	}()
	logf("level=info msg=%q", "Cluster DNS answering on "+addr+":53 for "+clusterDomain)
	return nil
}

func (d *clusterDNS) watch(ctx context.Context, cs kubernetes.Interface) {
	for {
		if list, err := cs.CoreV1().Services("").List(ctx, metav1.ListOptions{}); err == nil {
			m := map[string][4]byte{}
			for _, s := range list.Items {
				ip := net.ParseIP(s.Spec.ClusterIP).To4()
				if ip == nil {
					continue
				}
				m[s.Name+"."+s.Namespace+".svc."+clusterDomain] = [4]byte(ip)
			}
			d.mu.Lock()
			d.services = m
			d.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

func (d *clusterDNS) answer(q []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return nil
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 {
		return nil
	}
	name := strings.ToLower(qs[0].Name.String())
	if !strings.HasSuffix(name, "."+clusterDomain) {
		return d.forward(q)
	}
	resp := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true},
		Questions: qs,
	}
	d.mu.RLock()
	ip, ok := d.services[name]
	d.mu.RUnlock()
	switch {
	case ok && qs[0].Type == dnsmessage.TypeA:
		resp.Answers = []dnsmessage.Resource{{
			Header: dnsmessage.ResourceHeader{Name: qs[0].Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 5},
			Body:   &dnsmessage.AResource{A: ip},
		}}
	case ok:
		// The name exists, without records of that type.
	default:
		resp.RCode = dnsmessage.RCodeNameError
	}
	b, err := resp.Pack()
	if err != nil {
		return nil
	}
	return b
}

func (d *clusterDNS) forward(q []byte) []byte {
	if d.upstream == "" {
		return nil
	}
	c, err := net.DialTimeout("udp", d.upstream, 2*time.Second)
	if err != nil {
		return nil
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write(q); err != nil {
		return nil
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

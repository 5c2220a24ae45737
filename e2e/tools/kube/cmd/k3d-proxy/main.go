// Command k3d-proxy stands in for ghcr.io/k3d-io/k3d-proxy (nginx driven by
// confd) on the test bed. It reads the file k3d writes,
// /etc/confd/values.yaml:
//
//	ports:
//	  6443.tcp: [k3d-x-server-0]
//	  80.tcp: [k3d-x-server-0, k3d-x-agent-0]
//	settings: {workerConnections: 1024}
//
// and forwards each TCP port to the named upstreams (resolved through
// Docker's DNS, tried in turn from a rotating start, as nginx's stream
// proxy with its default round robin and next-upstream). It re-reads the
// file when it changes and logs nginx's "start worker processes" after
// each (re)load, which k3d waits for. UDP ports are not modelled.
package main

import (
	"bytes"
	"context"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"
)

const valuesPath = "/etc/confd/values.yaml"

type values struct {
	Ports map[string][]string `json:"ports"`
}

type listener struct {
	l         net.Listener
	upstreams atomic.Pointer[[]string]
	next      atomic.Uint64
}

func main() {
	log.SetFlags(log.LstdFlags)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	listeners := map[string]*listener{}
	var mu sync.Mutex
	var last []byte
	for {
		b, err := os.ReadFile(valuesPath)
		if err == nil && !bytes.Equal(b, last) {
			last = b
			var v values
			if err := yaml.Unmarshal(b, &v); err != nil {
				log.Printf("[emerg] %s: %v", valuesPath, err)
			} else {
				mu.Lock()
				apply(ctx, listeners, v)
				mu.Unlock()
				log.Printf("[notice] start worker processes")
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func apply(ctx context.Context, listeners map[string]*listener, v values) {
	keys := make([]string, 0, len(v.Ports))
	for k := range v.Ports {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		port, proto, _ := strings.Cut(k, ".")
		if proto != "tcp" {
			log.Printf("[warn] %s: only tcp is modelled", k)
			continue
		}
		ups := append([]string(nil), v.Ports[k]...)
		if ln, ok := listeners[port]; ok {
			ln.upstreams.Store(&ups)
			continue
		}
		l, err := net.Listen("tcp", ":"+port)
		if err != nil {
			log.Printf("[emerg] listen %s: %v", port, err)
			continue
		}
		ln := &listener{l: l}
		ln.upstreams.Store(&ups)
		listeners[port] = ln
		go ln.serve(ctx, port)
	}
}

func (ln *listener) serve(ctx context.Context, port string) {
	for {
		c, err := ln.l.Accept()
		if err != nil {
			return
		}
		go ln.forward(ctx, c, port)
	}
}

func (ln *listener) forward(ctx context.Context, c net.Conn, port string) {
	defer c.Close()
	ups := *ln.upstreams.Load()
	if len(ups) == 0 {
		return
	}
	start := int(ln.next.Add(1))
	var up net.Conn
	var err error
	for i := range ups {
		host := ups[(start+i)%len(ups)]
		d := net.Dialer{Timeout: 3 * time.Second}
		up, err = d.DialContext(ctx, "tcp", net.JoinHostPort(host, port))
		if err == nil {
			break
		}
		log.Printf("[error] connect() to %s:%s failed: %v", host, port, err)
	}
	if up == nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
}

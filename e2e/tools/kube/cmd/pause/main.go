// Command pause is the test bed's pod sandbox process (the role of
// Kubernetes's build/pause): it sleeps, reaps orphaned children and exits
// on SIGINT or SIGTERM. The bed packs it as the image K3s's containerd
// config names as sandbox_image, since no registry can be reached.
//
// `pause serve ADDR` is the bed's workload instead: an HTTP server that
// answers every request with the pod's hostname, for tests of pod and
// Service traffic across nodes.
package main

import (
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "serve" {
		host, _ := os.Hostname()
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, host) })
		srv := &http.Server{Addr: os.Args[2], ReadHeaderTimeout: 5 * time.Second}
		fmt.Fprintln(os.Stderr, srv.ListenAndServe())
		os.Exit(1)
	}
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

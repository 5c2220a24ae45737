// Command pause is the test bed's pod sandbox process (the role of
// Kubernetes's build/pause): it sleeps, reaps orphaned children and exits
// on SIGINT or SIGTERM. The bed packs it as the image K3s's containerd
// config names as sandbox_image, since no registry can be reached.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
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

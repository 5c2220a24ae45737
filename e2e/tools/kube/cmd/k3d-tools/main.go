// Command k3d-tools stands in for ghcr.io/k3d-io/k3d-tools on the test bed,
// where no image can be pulled. k3d runs its tools container with the
// argument "noop" during cluster creation and deletes it afterwards; that
// is all this models. Image import through the tools node (k3d image
// import's default mode) is not modelled: use the direct mode.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) != 2 || os.Args[1] != "noop" {
		fmt.Fprintf(os.Stderr, "k3d-tools stand-in: only \"noop\" is modelled, got %q\n", os.Args[1:])
		os.Exit(2)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}

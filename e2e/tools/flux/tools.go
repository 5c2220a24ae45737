//go:build tools

// Package flux pins the Flux controllers the test bed builds.
package flux

import (
	_ "github.com/fluxcd/kustomize-controller"
	_ "github.com/fluxcd/source-controller"
)

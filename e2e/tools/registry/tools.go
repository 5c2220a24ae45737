//go:build tools

// Package tools pins the registry's command for `go build`.
package tools

import _ "github.com/distribution/distribution/v3/cmd/registry"

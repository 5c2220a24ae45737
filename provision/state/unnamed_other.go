//go:build !linux

package state

import (
	"errors"
	"os"
)

// openUnnamed: unnamed files (O_TMPFILE) are Linux's; elsewhere the
// named temporary file and the sweep of stale ones are used.
func openUnnamed(string) (*os.File, bool) { return nil, false }

func linkUnnamed(*os.File, string) error { return errors.ErrUnsupported }

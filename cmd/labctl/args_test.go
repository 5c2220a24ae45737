package main

import (
	"io"
	"reflect"
	"testing"
	"time"
)

func TestHoistFlagsMovesFlagsBeforeArguments(t *testing.T) {
	app := newApp(io.Discard, io.Discard, time.Now)
	for _, tc := range []struct{ in, want []string }{
		{[]string{"labctl", "plan", "production", "-o", "json"}, []string{"labctl", "plan", "-o", "json", "production"}},
		{[]string{"labctl", "plan", "production", "--output=json"}, []string{"labctl", "plan", "--output=json", "production"}},
		{[]string{"labctl", "--profiles-dir", "d", "profiles", "show", "x", "-f", "p.yaml"}, []string{"labctl", "--profiles-dir", "d", "profiles", "show", "-f", "p.yaml", "x"}},
		{[]string{"labctl", "plan", "-o", "json", "production"}, []string{"labctl", "plan", "-o", "json", "production"}},
		{[]string{"labctl", "plan", "--", "-weird-name"}, []string{"labctl", "plan", "--", "-weird-name"}},
	} {
		if got := hoistFlags(app, tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("hoistFlags(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

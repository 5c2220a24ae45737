package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// hoistFlags moves flags that follow positional arguments in front of
// them, so `labctl plan production -o json` works as well as
// `labctl plan -o json production` (urfave/cli v2 stops parsing flags at
// the first argument). It knows which flags take a value from the
// command's own definitions; "--" ends flag parsing as usual.
func hoistFlags(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	cmds, flags := app.Commands, app.Flags
	i := 1
	// The command path: leading words that name (sub)commands, with any
	// flags in between left where they are.
	for i < len(args) {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			out = append(out, a)
			if takesValue(flags, a) && i+1 < len(args) {
				out = append(out, args[i+1])
				i++
			}
			i++
			continue
		}
		c := findCommand(cmds, a)
		if c == nil {
			break
		}
		out = append(out, a)
		cmds, flags = c.Subcommands, c.Flags
		i++
	}
	var positional, hoisted []string
	for ; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			positional = append(positional, args[i:]...)
			i = len(args)
		case strings.HasPrefix(a, "-") && a != "-":
			hoisted = append(hoisted, a)
			if takesValue(flags, a) && i+1 < len(args) {
				hoisted = append(hoisted, args[i+1])
				i++
			}
		default:
			positional = append(positional, a)
		}
	}
	return append(append(out, hoisted...), positional...)
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// takesValue reports whether the flag named by arg ("-o", "--output",
// "--output=json") consumes the next argument.
func takesValue(flags []cli.Flag, arg string) bool {
	name := strings.TrimLeft(arg, "-")
	if strings.Contains(name, "=") {
		return false
	}
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				_, isBool := f.(*cli.BoolFlag)
				return !isBool
			}
		}
	}
	return false
}

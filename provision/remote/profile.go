package remote

import (
	"fmt"

	"github.com/labctl/labctl/profiles"
)

// ConfigFor is how to reach a profile's node. lookup resolves environment
// variables (os.LookupEnv).
func ConfigFor(s *profiles.SSH, n profiles.Node, acceptNew bool, lookup func(string) (string, bool)) (Config, error) {
	if s == nil {
		return Config{}, fmt.Errorf("%s: the profile has no ssh section", n.Name)
	}
	c := Config{
		Name: n.Name, Address: n.Address, Port: s.Port, User: s.User,
		IdentityFiles: s.IdentityFiles, Agent: true,
		KnownHostsFile: s.KnownHostsFile, AcceptNewHostKeys: acceptNew,
		JumpHost: s.JumpHost,
	}
	if s.SudoPasswordRef != nil {
		pw, err := s.SudoPasswordRef.Resolve(lookup)
		if err != nil {
			return Config{}, fmt.Errorf("%s: sudo password (spec.ssh.sudoPasswordRef): %w", n.Name, err)
		}
		c.SudoPassword = pw
	}
	return c, nil
}

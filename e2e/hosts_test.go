//go:build e2e

package e2e

import "testing"

// TestGivenHosts runs, one after another, the scenarios on bed nodes
// given to labctl as hosts (no Proxmox): the cluster flow, failures and
// kills converging, the kubeconfig, the prerequisites, sudo and a changed
// host key. It runs in parallel with the production scenario on the PVE
// simulator, which is mostly waiting: their nodes' names and addresses
// differ (node-N, sudo-1, rekey-1 at 172.30.20.11-74;
// kube-srv-N at .61-.63 are the production scenario's, so the kill
// scenario uses .71-.74; the Docker host .95-.96).
func TestGivenHosts(t *testing.T) {
	t.Parallel()
	for _, s := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"ClusterFlowFormsThreeServersAndSecondRunChangesNothing", clusterFlowFormsThreeServersAndSecondRunChangesNothing},
		{"CreateFailuresAndKillsConvergeOnOneCluster", createFailuresAndKillsConvergeOnOneCluster},
		{"KubeconfigFetchedOverSSHAndMerged", kubeconfigFetchedOverSSHAndMerged},
		{"PrerequisitesConvergeAndSecondRunChangesNothing", prerequisitesConvergeAndSecondRunChangesNothing},
		{"SudoOverSSHForEachKindOfUser", sudoOverSSHForEachKindOfUser},
		{"RebuiltNodeWithNewHostKeyIsRefused", rebuiltNodeWithNewHostKeyIsRefused},
	} {
		t.Run(s.name, s.run)
	}
}

// Package testbed runs real peers for labctl's end-to-end tests on a
// machine that cannot pull images or download K3s: its own Docker daemon
// (or the one already running), a Debian bookworm node image built with
// debootstrap, and node containers that boot systemd and sshd on a
// private network with static IPs, each with its own host keys and a
// generated login key for root, a passwordless sudo user and a user whose
// sudo asks for a password.
//
// It is test code: nothing under e2e/ is part of the labctl binary.
//
// What a node does not model compared with a Proxmox VM: its own kernel
// (nodes share the host's, which here cannot load modules, so modprobe of
// iscsi_tcp or dm_crypt fails the way it does on a kernel without them),
// block devices, cloud-init, and a QEMU guest agent.
package testbed

// Package testbed runs real peers for labctl's end-to-end tests on a
// machine that cannot pull images or download K3s: its own Docker daemon
// (or the one already running), a Debian bookworm node image built with
// debootstrap, and node containers that boot systemd and sshd on a
// private network with static IPs, each with its own host keys and a
// generated login key for root, a passwordless sudo user and a user whose
// sudo asks for a password.
//
// BuildKube builds upstream Kubernetes and the K3s stand-in
// (e2e/tools/kube); InstallKube/InstallBundle put them on a node the way
// K3s unpacks its bundle, with a locally built pause image as an air-gap
// image. K3dImages builds what k3d v5.8.3 asks Docker for —
// docker.io/rancher/k3s (the node image with the stand-in as /bin/k3s),
// ghcr.io/k3d-io/k3d-proxy and ghcr.io/k3d-io/k3d-tools — under those
// names. In real-images mode (RealImages) it pushes them to its own
// registry (CNCF Distribution, e2e/tools/registry) and the real k3d
// library pulls them by name: the bed's dockerd, and a Docker host
// node's, use the bed's proxy (pullProxy) as HTTPS proxy, which tunnels
// the registry hosts to that registry and refuses every other host.
//
// It is test code: nothing under e2e/ is part of the labctl binary.
//
// What a node does not model compared with a Proxmox VM: its own kernel
// (nodes share the host's, which here cannot load modules, so modprobe of
// iscsi_tcp or dm_crypt fails the way it does on a kernel without them),
// block devices, cloud-init, and a QEMU guest agent.
package testbed

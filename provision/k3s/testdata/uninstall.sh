set -e
src=$(awk '$2 == "/var/lib/rancher/k3s/server/db" && $3 == "none" { print $1 }' /etc/fstab 2>/dev/null)
if mountpoint -q /var/lib/rancher/k3s/server/db 2>/dev/null; then
  systemctl stop k3s 2>/dev/null || true
  umount /var/lib/rancher/k3s/server/db
fi
for s in k3s-uninstall.sh k3s-agent-uninstall.sh; do
  if [ -x /usr/local/bin/$s ]; then /usr/local/bin/$s; fi
done
rm -rf /var/lib/rancher/k3s/server/db
if [ -n "$src" ] && [ -d "$src" ]; then find "$src" -mindepth 1 -delete; fi
if [ -x /usr/local/bin/k3s ] || [ -d /etc/rancher/k3s ]; then echo "K3s still present after its uninstall script" >&2; exit 1; fi

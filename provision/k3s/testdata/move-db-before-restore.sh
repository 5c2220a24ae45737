set -e
ts=$(date +%Y%m%d-%H%M%S)
src=$(awk '$2 == "/var/lib/rancher/k3s/server/db" && $3 == "none" { print $1 }' /etc/fstab 2>/dev/null)
if [ -n "$src" ] && mountpoint -q /var/lib/rancher/k3s/server/db; then
  mkdir -p "$src-before-restore-$ts"
  find "$src" -mindepth 1 -maxdepth 1 -exec mv -t "$src-before-restore-$ts" {} +
elif [ -d /var/lib/rancher/k3s/server/db ]; then
  mv /var/lib/rancher/k3s/server/db /var/lib/rancher/k3s/server/db-before-restore-$ts
fi

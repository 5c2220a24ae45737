d=$(mktemp -d) || exit 1
trap 'rm -rf "$d"' EXIT
curl -sS --max-time 5 --cacert /var/lib/rancher/k3s/server/tls/etcd/server-ca.crt --cert /var/lib/rancher/k3s/server/tls/etcd/client.crt --key /var/lib/rancher/k3s/server/tls/etcd/client.key -X POST https://127.0.0.1:2379/v3/cluster/member/list -d '{}' > "$d/members" 2>&1 &
curl -sS --max-time 5 --cacert /var/lib/rancher/k3s/server/tls/etcd/server-ca.crt --cert /var/lib/rancher/k3s/server/tls/etcd/client.crt --key /var/lib/rancher/k3s/server/tls/etcd/client.key -X POST https://10.0.40.101:2379/v3/maintenance/status -d '{}' > "$d/0" 2>&1 &
curl -sS --max-time 5 --cacert /var/lib/rancher/k3s/server/tls/etcd/server-ca.crt --cert /var/lib/rancher/k3s/server/tls/etcd/client.crt --key /var/lib/rancher/k3s/server/tls/etcd/client.key -X POST https://10.0.40.102:2379/v3/maintenance/status -d '{}' > "$d/1" 2>&1 &
curl -sS --max-time 5 --cacert /var/lib/rancher/k3s/server/tls/etcd/server-ca.crt --cert /var/lib/rancher/k3s/server/tls/etcd/client.crt --key /var/lib/rancher/k3s/server/tls/etcd/client.key -X POST https://10.0.40.103:2379/v3/maintenance/status -d '{}' > "$d/2" 2>&1 &
wait
echo '--- members'; cat "$d/members"; echo
echo '--- status 10.0.40.101'; cat "$d/0"; echo
echo '--- status 10.0.40.102'; cat "$d/1"; echo
echo '--- status 10.0.40.103'; cat "$d/2"; echo

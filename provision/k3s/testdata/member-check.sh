echo '--- members'; curl -sS --max-time 5 --cacert /var/lib/rancher/k3s/server/tls/etcd/server-ca.crt --cert /var/lib/rancher/k3s/server/tls/etcd/client.crt --key /var/lib/rancher/k3s/server/tls/etcd/client.key -X POST https://127.0.0.1:2379/v3/cluster/member/list -d '{}' 2>&1; echo
echo '--- node'
curl -sS --max-time 10 --cacert /var/lib/rancher/k3s/server/tls/server-ca.crt --cert /var/lib/rancher/k3s/server/tls/client-admin.crt --key /var/lib/rancher/k3s/server/tls/client-admin.key https://127.0.0.1:6443/api/v1/nodes/kube-srv-2 2>&1

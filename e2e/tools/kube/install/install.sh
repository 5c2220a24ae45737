#!/bin/sh
# Install script of the test bed's K3s stand-in, with the interface of
# K3s's get.k3s.io script that labctl relies on:
#   INSTALL_K3S_VERSION, INSTALL_K3S_EXEC (server|agent [flags]),
#   INSTALL_K3S_SKIP_DOWNLOAD=true (binary already at /usr/local/bin/k3s),
#   K3S_TOKEN, K3S_URL (written to the unit's env file),
#   systemd units k3s / k3s-agent (Type=notify: `systemctl restart` returns
#   when K3s is up), k3s-uninstall.sh / k3s-agent-uninstall.sh.
# Downloads come from INSTALL_K3S_DOWNLOAD_URL (the bed's file server),
# where the real script uses GitHub releases.
set -e
EXEC=${INSTALL_K3S_EXEC:-server}
case "$EXEC" in
  agent*) NAME=k3s-agent ;;
  *) NAME=k3s ;;
esac
BIN=/usr/local/bin/k3s
if [ "${INSTALL_K3S_SKIP_DOWNLOAD}" != "true" ]; then
  [ -n "${INSTALL_K3S_DOWNLOAD_URL}" ] || { echo "[ERROR] INSTALL_K3S_DOWNLOAD_URL is not set" >&2; exit 1; }
  echo "[INFO]  Downloading K3s ${INSTALL_K3S_VERSION}"
  curl -sfL -o "${BIN}.tmp" "${INSTALL_K3S_DOWNLOAD_URL}/k3s"
  chmod 755 "${BIN}.tmp"
  mv -f "${BIN}.tmp" "$BIN"
else
  echo "[INFO]  Skipping K3s download and verify"
fi
[ -x "$BIN" ] || { echo "[ERROR] $BIN is missing" >&2; exit 1; }
# One stand-in binary plays every release: it reports the one installed.
if [ -n "${INSTALL_K3S_VERSION}" ]; then
  mkdir -p /usr/local/lib/k3s-standin
  echo "${INSTALL_K3S_VERSION}" > /usr/local/lib/k3s-standin/version
fi

ENVFILE=/etc/systemd/system/${NAME}.service.env
umask 077
: > "$ENVFILE"
[ -n "${K3S_TOKEN}" ] && echo "K3S_TOKEN=${K3S_TOKEN}" >> "$ENVFILE"
[ -n "${K3S_URL}" ] && echo "K3S_URL=${K3S_URL}" >> "$ENVFILE"
umask 022
cat > /etc/systemd/system/${NAME}.service <<UNIT
[Unit]
Description=Lightweight Kubernetes (labctl test bed stand-in)
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
EnvironmentFile=-${ENVFILE}
ExecStart=${BIN} ${EXEC}
KillMode=control-group
Restart=always
RestartSec=5s
TimeoutStartSec=300

[Install]
WantedBy=multi-user.target
UNIT

cat > /usr/local/bin/${NAME}-uninstall.sh <<UNINSTALL
#!/bin/sh
set -x
systemctl disable --now ${NAME} || true
rm -f /etc/systemd/system/${NAME}.service /etc/systemd/system/${NAME}.service.env
systemctl daemon-reload
pkill -f /usr/local/bin/kube- || true
rm -rf /var/lib/rancher/k3s /etc/rancher/k3s $BIN /usr/local/bin/${NAME}-uninstall.sh /usr/local/lib/k3s-standin
UNINSTALL
chmod 755 /usr/local/bin/${NAME}-uninstall.sh

systemctl daemon-reload
systemctl enable ${NAME} >/dev/null 2>&1
echo "[INFO]  systemd: Starting ${NAME}"
systemctl restart ${NAME}

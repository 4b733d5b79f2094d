#!/usr/bin/env bash
# `make run`: the embedded default on this machine. One control plane with
# embedded etcd and NATS (data under .avatarfleet/), one worker (GPU if there
# is one, else CPU). Ctrl-C stops both cleanly. The control plane makes a
# development CA under .avatarfleet/pki/ on first start; the worker, given no
# --fleet-* files, issues itself a certificate from it, so the two talk mutual
# TLS (development only: a deployment uses `avatarctl certs`).
set -euo pipefail
cd "$(dirname "$0")/.."
listen=${AVATARFLEET_LISTEN:-:8080}
port=${listen##*:}

# The children run in process groups of their own, so a Ctrl-C reaches only
# this script, which stops them in order: the worker first (it drains and
# deregisters while etcd is up), then the control plane with embedded etcd.
pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "run: stopping"
  # Worker first: it drains and deregisters while etcd is still up.
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  exit 0
}
trap stop INT TERM EXIT

setsid bin/controlplane --listen "$listen" &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
AVATARFLEET_DRAIN_TIMEOUT=${AVATARFLEET_DRAIN_TIMEOUT:-5s} setsid bin/worker --grpc-listen 127.0.0.1:9090 &
pids+=($!)
# The demo page (controlplane/pkg/httpapi/demo). localhost is a secure
# context, which the page's microphone (getUserMedia) needs.
host=${listen%:*}
case "$host" in ""|0.0.0.0|"[::]"|"::") host=localhost ;; esac
url="http://$host:$port/"
key=${AVATARFLEET_API_KEY:-}
keyfile="${AVATARFLEET_DATA_DIR:-.avatarfleet}/api-key"
if [ -z "$key" ] && [ -z "${AVATARFLEET_API_KEYS_FILE:-}" ] && [ -r "$keyfile" ]; then
  key=$(tr -d '[:space:]' <"$keyfile")
fi
echo "run: demo page: $url"
if [ -n "$key" ]; then
  echo "run: API key:   $key"
  echo "run: or open    $url?key=$key  (the page takes the key and drops it from the address bar)"
else
  echo "run: API key:   one of ${AVATARFLEET_API_KEYS_FILE:-your keys file}"
fi
echo "run: press Ctrl-C to stop"
wait -n "${pids[@]}" || true
stop

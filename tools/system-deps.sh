#!/usr/bin/env bash
# Debian packages the test suite runs for real, installed when missing (one apt-get for all), so that
# `make test` passes on a fresh machine (CI runs as root):
#   etcd-server      the cluster coordinator's contract tests (a real etcd, 3.4+)
#   prometheus       promtool checks the /metrics exposition
#   rabbitmq-server  ships rabbitmqadmin, which the management API's compatibility tests drive (no node starts)
set -euo pipefail
need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v rabbitmqadmin >/dev/null 2>&1 || need+=(rabbitmq-server)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update && apt-get install -y --no-install-recommends "${need[@]}"
else
  echo "make test: missing system packages: ${need[*]} (Debian: sudo apt-get install ${need[*]});" \
       "the etcd tests fail and the promtool/rabbitmqadmin tests are skipped without them" >&2
fi

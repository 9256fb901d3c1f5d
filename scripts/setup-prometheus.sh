#!/usr/bin/env bash
# Installs the real Prometheus from Debian (`prometheus` package), idempotently, for the metrics
# test of `make test` (tests/metrics/check_prometheus.py). Prints the path of its binary.
# Only the binary is used: the test runs it with its own config, port and storage, so the
# package's own service is stopped and kept from starting.
set -euo pipefail
if ! command -v prometheus >/dev/null 2>&1; then
  echo "setup-prometheus: installing prometheus" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >&2
  # policy-rc.d 101: the package's service is not started on install.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
command -v prometheus

#!/usr/bin/env bash
# Installs what Swiftlet needs on a Debian machine, idempotently: QEMU, qemu-img, and the tools
# the tests and benchmarks use. Swift itself must already be on PATH (/opt/swift/usr/bin).
set -euo pipefail
# --bench adds libvirt, the baseline `make bench` compares against.
packages=(qemu-system-x86 qemu-utils zlib1g-dev iputils-ping python3 python3-yaml python3-jsonschema curl openssl iproute2 nftables wrk procps)
if [ "${1:-}" = "--bench" ]; then packages+=(libvirt-daemon-system libvirt-clients); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "setup: swift is not on PATH (expected /opt/swift/usr/bin)"; exit 1; }
command -v qemu-system-x86_64 >/dev/null || { echo "setup: qemu-system-x86_64 missing after install"; exit 1; }
# The unprivileged user confined VMMs run as (docs/qemu-driver.md, "Confinement").
if ! getent passwd swiftlet-vmm >/dev/null; then
  echo "setup: adding the swiftlet-vmm user"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin swiftlet-vmm
fi

#!/usr/bin/env bash
# Podman + CRIU migration baseline (bench/podman_criu.py): installs podman, runc, busybox-static,
# the CRIU build dependencies, and builds CRIU 4.2 from the vendored tarball into
# /usr/local/sbin/criu when it is missing. Debian 12's criu 3.17 fails on this kernel
# ("vdso: Unexpected rt vDSO area bounds"); see ../shared/PLATFORM.md. Idempotent. Run as root.
# CRIU is a third-party tool for the baseline only (GPL-2.0); nothing in Swiftlet links it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
tarball=${CRIU_TARBALL:-$here/../shared/vendor/criu-4.2.tar.gz}
[ -f "$tarball" ] || tarball=/work/shared/vendor/criu-4.2.tar.gz
sha=7e705f59d18a90b39b4f6b029a26eea46346d90085c654ad9ac187cd9f7f3306

pkgs="podman runc busybox-static iproute2 libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler
protobuf-compiler python3-protobuf libnl-3-dev libcap-dev libnet1-dev libaio-dev libgnutls28-dev
libbsd-dev libdrm-dev uuid-dev pkg-config build-essential"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "installing:$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi

if [ -x /usr/local/sbin/criu ] && /usr/local/sbin/criu --version 2>/dev/null | grep -q 'Version: 4\.'; then
  echo "criu: $(/usr/local/sbin/criu --version | head -1) already at /usr/local/sbin/criu"
else
  echo "$sha  $tarball" | sha256sum -c -
  build=$(mktemp -d /tmp/criu-build.XXXXXX)
  trap 'rm -rf "$build"' EXIT
  tar -xzf "$tarball" -C "$build"
  src=$(find "$build" -maxdepth 2 -name Makefile -path '*criu*' -printf '%h\n' | head -1)
  echo "building CRIU in $src (make -j2 criu, ~5 min)"
  make -C "$src" -j2 criu >"$build/make.log" 2>&1 || { tail -40 "$build/make.log"; exit 1; }
  install -m 0755 "$src/criu/criu" /usr/local/sbin/criu
fi
# podman must find CRIU 4.2 first; Debian's criu package (3.17) must not shadow it.
if dpkg -s criu >/dev/null 2>&1; then echo "warning: Debian's criu 3.17 is installed; /usr/local/sbin comes first in PATH"; fi
/usr/local/sbin/criu check || true
echo "podman $(podman --version | awk '{print $3}'), runc $(runc --version | head -1 | awk '{print $3}'), criu $(/usr/local/sbin/criu --version | head -1)"

#!/usr/bin/env bash
# Installs the real OpenStack clients (python-openstackclient and openstacksdk, PyPI, pinned) into a
# venv under .build, idempotently, for tests/openstack/run_openstack_cli.py. Prints the venv's path.
set -euo pipefail
osc_version=10.5.0
sdk_version=4.22.0
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.build/openstack-venv"
if ! /usr/bin/python3 -c "import ensurepip, venv" 2>/dev/null; then
  echo "setup-openstack-client: installing python3-venv" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi
installed() {
  "$venv/bin/python" - "$osc_version" "$sdk_version" 2>/dev/null <<'PY'
import sys
from importlib.metadata import version
sys.exit(0 if (version("python-openstackclient"), version("openstacksdk")) == (sys.argv[1], sys.argv[2]) else 1)
PY
}
if ! installed; then
  echo "setup-openstack-client: installing python-openstackclient $osc_version and openstacksdk $sdk_version into $venv" >&2
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "python-openstackclient==$osc_version" "openstacksdk==$sdk_version" >&2
fi
echo "$venv"

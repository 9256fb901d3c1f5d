#!/usr/bin/env bash
# Installs schemathesis (PyPI) into a venv under .build, idempotently, for the contract fuzzing of
# `make test` (tests/contract/run_schemathesis.py). Prints the path of its `schemathesis` command.
set -euo pipefail
version=4.32.5
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.build/schemathesis-venv"
if ! /usr/bin/python3 -c "import ensurepip, venv" 2>/dev/null; then
  echo "setup-schemathesis: installing python3-venv" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi
if [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $version" ]; then
  echo "setup-schemathesis: installing schemathesis $version into $venv" >&2
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version" >&2
fi
echo "$venv/bin/schemathesis"

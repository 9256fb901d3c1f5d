#!/usr/bin/env bash
# Installs headless Chromium, its WebDriver and Selenium from Debian (`chromium`,
# `chromium-driver`, `python3-selenium`), idempotently, for the dashboard's browser test of
# `make test` (tests/ui/run_ui.py) and bench/ui.py. Prints the path of chromedriver.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1 \
  || ! /usr/bin/python3 -c 'import selenium' >/dev/null 2>&1; then
  echo "setup-chromium: installing chromium, chromium-driver, python3-selenium" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver python3-selenium >/dev/null
fi
command -v chromedriver

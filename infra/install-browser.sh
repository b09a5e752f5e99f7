#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver, for the Flower browser test (tests/test_flower.py).
# Idempotent; `make test` runs it. Needs root (or sudo) and Debian's package registry.
set -euo pipefail
if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
  exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then SUDO="sudo -n"; else
    echo "install-browser: not root and no sudo; install chromium and chromium-driver by hand" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
packages=(chromium chromium-driver)
$SUDO apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null ||
  { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null; }

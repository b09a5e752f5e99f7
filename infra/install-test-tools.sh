#!/usr/bin/env bash
# Debian packages the test suite drives: Chromium + ChromeDriver (the Flower browser test) and
# docker-compose (v1, which parses and validates compose.yaml without a Docker engine).
# Idempotent; `make test` runs it. Needs root (or sudo) and Debian's package registry.
set -euo pipefail
packages=()
[[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]] || packages+=(chromium chromium-driver)
command -v docker-compose >/dev/null || packages+=(docker-compose)
if [[ ${#packages[@]} -eq 0 ]]; then
  exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then SUDO="sudo -n"; else
    echo "install-test-tools: not root and no sudo; install ${packages[*]} by hand" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null ||
  { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null; }

#!/usr/bin/env bash
# Debian packages the test suite drives: Chromium + ChromeDriver (the Flower browser test),
# docker-compose (v1, which parses and validates compose.yaml without a Docker engine), and
# Prometheus's promtool (checks infra/prometheus/), taken out of Debian's package into BIN_DIR
# (the venv's bin, the first argument) without installing the server.
# Idempotent; `make test` runs it. Needs root (or sudo) and Debian's package registry.
set -euo pipefail
BIN_DIR=${1:-.venv/bin}
if [[ ! -x "$BIN_DIR/promtool" ]]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && { apt-get download -q prometheus >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get download -q prometheus >/dev/null 2>&1; }; })
  dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
  install -m 755 "$work/root/usr/bin/promtool" "$BIN_DIR/promtool"
fi
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

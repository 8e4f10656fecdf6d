#!/usr/bin/env bash
# Headless Chromium and its WebDriver (chromedriver) from Debian's packages, for the
# browser check of the click-through page (shared/tests/browser.rs). Idempotent: does
# nothing when both `chromium` and `chromedriver` are on PATH. Otherwise installs
# `chromium` and `chromium-driver` with apt-get (as root, or through sudo), running
# `apt-get update` first when the package lists are missing or a day old, and again if
# the install fails on lists that name files the mirror no longer has.
#
# Usage: local/setup-browser.sh        prints the versions it finds or installed
set -euo pipefail

packages=(chromium chromium-driver)

show_versions() {
  echo "browser: $(chromium --version 2>/dev/null || echo 'chromium: no version')" >&2
  echo "browser: $(chromedriver --version 2>/dev/null | cut -d' ' -f1-2 || true)" >&2
}

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  show_versions
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-browser: no apt-get here; install Chromium and its chromedriver (same version) by hand" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "setup-browser: not root and no sudo: cannot apt-get install ${packages[*]}" >&2
    exit 1
  fi
  sudo=(sudo)
fi
apt_get() { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q "$@"; }

started=$(date +%s)
# Lists older than a day (or none at all, as on a fresh image) are refreshed first.
lists=/var/lib/apt/lists
if [ -z "$(find "$lists" -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -n1)" ]; then
  echo "+ apt-get update" >&2
  apt_get update
fi
echo "+ apt-get install --no-install-recommends ${packages[*]}" >&2
if ! apt_get install -y --no-install-recommends "${packages[@]}"; then
  echo "+ apt-get update (the install failed; the lists may be stale)" >&2
  apt_get update
  apt_get install -y --no-install-recommends "${packages[@]}"
fi
echo "setup-browser: installed ${packages[*]} in $(($(date +%s) - started)) s" >&2
show_versions

#!/usr/bin/env bash
# Installs what moetune needs to build and test on a fresh Debian machine, and nothing that is already there.
# Called by `make demo` and `make test` (and so by CI); safe to run again.
set -euo pipefail

debian_packages=(cmake g++ make pkg-config libgtest-dev nlohmann-json3-dev libopenblas-dev)

missing=()
for package in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

#!/usr/bin/env bash
# Installs what moetune needs to build and test on a fresh Debian machine, and nothing that is already there.
# Called by `make demo` and `make test` (and so by CI); safe to run again.
set -euo pipefail

debian_packages=(cmake g++ make pkg-config libgtest-dev nlohmann-json3-dev libopenblas-dev libpcre2-dev libicu-dev libsentencepiece-dev)

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

# The CUDA backend's attention uses cuDNN through the header-only cuDNN frontend (PyPI: nvidia-cudnn-frontend).
# Fetched only when a CUDA toolkit is present; unpacked into .deps/ (ignored by git).
cudnn_frontend_version=1.32.0
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  project_root="$(cd "$(dirname "$0")/.." && pwd)"
  target="$project_root/.deps/cudnn_frontend-$cudnn_frontend_version"
  if [ ! -f "$target/include/cudnn_frontend.h" ]; then
    echo "setup: fetching nvidia-cudnn-frontend==$cudnn_frontend_version (headers)"
    rm -rf "$target.tmp" && mkdir -p "$target.tmp"
    python3 -m pip download -q --no-deps --only-binary=:all: "nvidia-cudnn-frontend==$cudnn_frontend_version" -d "$target.tmp/wheel"
    python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$target.tmp"/wheel/*.whl "$target.tmp/unpacked"
    mkdir -p "$target" && rm -rf "$target/include" && mv "$target.tmp/unpacked/include" "$target/include" && rm -rf "$target.tmp"
  fi
fi

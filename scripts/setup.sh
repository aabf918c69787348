#!/usr/bin/env bash
# Installs what moetune needs to build and test on a fresh Debian machine, and nothing that is already there.
# Called by `make demo` and `make test` (and so by CI); safe to run again.
set -euo pipefail

debian_packages=(cmake g++ make pkg-config libgtest-dev nlohmann-json3-dev libopenblas-dev libpcre2-dev libicu-dev)

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
  # The Hopper grouped GEMM of the routed experts (src/ops/cuda/grouped_gemm_sm90.cu) is built from CUTLASS/CuTe, whose
  # headers ship in the nvidia-cutlass wheel (PyPI) under cutlass_library/source/include.
  cutlass_version=4.2.0.0
  cutlass_target="$project_root/.deps/cutlass-$cutlass_version"
  if [ ! -f "$cutlass_target/include/cutlass/cutlass.h" ]; then
    echo "setup: fetching nvidia-cutlass==$cutlass_version (headers)"
    rm -rf "$cutlass_target.tmp" && mkdir -p "$cutlass_target.tmp"
    python3 -m pip download -q --no-deps --only-binary=:all: "nvidia-cutlass==$cutlass_version" -d "$cutlass_target.tmp/wheel"
    python3 -c "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith('cutlass_library/source/include/')])" \
      "$cutlass_target.tmp"/wheel/*.whl "$cutlass_target.tmp/unpacked"
    mkdir -p "$cutlass_target" && rm -rf "$cutlass_target/include" &&
      mv "$cutlass_target.tmp/unpacked/cutlass_library/source/include" "$cutlass_target/include" && rm -rf "$cutlass_target.tmp"
  fi
fi

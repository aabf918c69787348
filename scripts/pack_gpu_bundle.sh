#!/usr/bin/env bash
# Packs what the GPU machine needs to run moetune built here: the binaries and the shared libraries of this machine's
# Debian packages that the GPU machine's image may lack (OpenBLAS, ICU, PCRE2 and their runtime deps). CUDA, cuBLAS,
# cuDNN and NCCL are the GPU machine's own. Output: .gpu_bundle/bundle.tar.xz (ignored by git; pass it in `carry`).
# BUILD_DIR (default build) names the build folder the binaries come from.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=$(mktemp -d)
mkdir -p "$stage/bin" "$stage/lib" .gpu_bundle
cp "${BUILD_DIR:-build}/moetune" "${BUILD_DIR:-build}/moetune_tests" "${BUILD_DIR:-build}/load_benchmark" "$stage/bin/"
for binary in "$stage"/bin/*; do
  ldd "$binary" | awk '/=> \// {print $3}' | { grep -E 'openblas|gfortran|quadmath|libicu|pcre2' || true; } | while read -r lib; do
    cp -L "$lib" "$stage/lib/"
  done
done
for lib in "$stage"/lib/libicuuc.so.*; do  # ICU's data library is a dependency of libicuuc, not of the binaries
  ldd "$lib" | awk '/=> \// {print $3}' | grep -E 'libicu' | xargs -r -I{} cp -L {} "$stage/lib/"
done
tar cJf .gpu_bundle/bundle.tar.xz -C "$stage" bin lib
rm -rf "$stage"
ls -la .gpu_bundle/bundle.tar.xz

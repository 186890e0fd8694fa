#!/usr/bin/env bash
# Installs the Debian packages kindling's tests need, when they are missing.
# Each line of NEEDS is "<command> <debian package>"; a command already on
# PATH is not reinstalled. Runs apt-get update at most once.
set -euo pipefail

NEEDS=(
  # The wasm sandbox is pure Go and needs nothing. Sandboxes that run real
  # runtimes add their binaries here as they land (runc, crun, containerd,
  # qemu-system-x86_64, chromium for the HTML report test).
  "chromium chromium"   # bench: renders the HTML report headless in its test
  "runc runc"           # sandbox/oci
  "crun crun"           # sandbox/oci (needs the hugetlb workaround, applied by its tests)
)

missing=()
for need in "${NEEDS[@]+"${NEEDS[@]}"}"; do
  read -r cmd pkg <<<"$need"
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: nothing to install"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages ${missing[*]}; run as root or install them" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"

#!/usr/bin/env bash
# Installs the Debian packages kindling's tests need, when they are missing.
# Each line of NEEDS is "<command> <debian package>"; a command already on
# PATH is not reinstalled. Runs apt-get update at most once.
set -euo pipefail

NEEDS=(
  # The wasm sandbox is pure Go and needs nothing; the sandboxes that run
  # real runtimes, and the HTML report's test, need these.
  "chromium chromium"   # bench: renders the HTML report headless in its test
  "runc runc"           # sandbox/oci
  "crun crun"           # sandbox/oci (needs the hugetlb workaround, applied by its tests)
  "containerd containerd"  # shim: tests start a private containerd (brings ctr)
  "qemu-system-x86_64 qemu-system-x86"  # sandbox/microvm
  "xz xz-utils"         # sandbox/microvm: Debian's kernel image is xz-compressed
)

missing=()
for need in "${NEEDS[@]+"${NEEDS[@]}"}"; do
  read -r cmd pkg <<<"$need"
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
# sandbox/microvm boots the distribution's kernel.
compgen -G "/boot/vmlinuz-*" >/dev/null || missing+=(linux-image-amd64)
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

#!/usr/bin/env bash
# Installs the system packages Vigie builds and tests with, when missing (Debian).
set -euo pipefail
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in clang libclang-dev librocksdb-dev systemd-journal-remote iproute2 pkg-config; do
  have "$p" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The detection tests receive real email with Python's aiosmtpd (PyPI).
if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
  echo "installing: aiosmtpd (pip)"
  # Debian's system Python refuses pip installs (PEP 668); fall back to its own package.
  pip install --quiet aiosmtpd 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages aiosmtpd 2>/dev/null \
    || { if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
         $SUDO apt-get install -y -qq python3-aiosmtpd >/dev/null; }
  python3 -c 'import aiosmtpd' || { echo "cannot install aiosmtpd: run pip install aiosmtpd" >&2; exit 1; }
fi
command -v cargo >/dev/null || { echo "cargo is missing: install Rust 1.95 with rustup" >&2; exit 1; }

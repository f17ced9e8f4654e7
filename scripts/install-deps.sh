#!/usr/bin/env bash
# Installs the Debian 12 packages Tandem needs to build and test, plus any packages given as
# arguments (scripts/fuzz-smoke.sh asks for clang). Idempotent: quiet and fast when everything
# is already present. CUDA is optional and never installed here.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git curl ca-certificates
  libdnnl-dev libtbb-dev libhwloc-dev libcpp-httplib-dev nlohmann-json3-dev libpcre2-dev
  libgtest-dev libgmock-dev
  nodejs npm python3
  "$@"
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Debian's node may be replaced by a newer one from elsewhere; accept any working node + npm.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  filtered=()
  for p in "${missing[@]}"; do [[ "$p" == nodejs || "$p" == npm ]] || filtered+=("$p"); done
  missing=("${filtered[@]}")
fi
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "install-deps: installing ${missing[*]}"
SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

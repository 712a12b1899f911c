#!/usr/bin/env bash
# Install the Debian tools the tests and benchmarks drive, only those missing.
set -euo pipefail
declare -A pkg_of=(
  [skopeo]=skopeo [umoci]=umoci [docker-registry]=docker-registry [htpasswd]=apache2-utils [wrk]=wrk [buildah]=buildah
)
missing=()
for cmd in "${!pkg_of[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg_of[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing Debian packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

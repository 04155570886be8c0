#!/usr/bin/env bash
# Installs what the aarch64 cross build and its emulated tests need (idempotent):
# - Debian's rustc-web (the host compiler) and the arm64 build of the same std, taken from one apt list so their
#   versions match. The arm64 package is fetched under a private APT_CONFIG: `dpkg --add-architecture` breaks apt
#   on these machines;
# - the aarch64 cross linker (gcc-aarch64-linux-gnu) and qemu-user-static to run the tests.
set -euo pipefail
sudo=(); [[ "$(id -u)" != 0 ]] && sudo=(sudo)
target=aarch64-unknown-linux-gnu

have() {
  [[ -x /usr/bin/rustc && -d /usr/lib/rustlib/$target/lib ]] && command -v aarch64-linux-gnu-gcc >/dev/null &&
    command -v qemu-aarch64-static >/dev/null
}
if have; then exit 0; fi

export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq rustc-web gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static >/dev/null

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
cat >"$work/apt.conf" <<CONF
APT::Architectures { "amd64"; "arm64"; };
Dir::State::Lists "$work/lists";
Dir::Cache "$work/cache";
CONF
export APT_CONFIG="$work/apt.conf"
apt-get update -qq -o APT::Sandbox::User=root
# The std that matches the installed rustc-web exactly.
version="$(dpkg-query -W -f='${Version}' libstd-rust-web-dev)"
(cd "$work" && apt-get download -o APT::Sandbox::User=root "libstd-rust-web-dev:arm64=$version")
dpkg-deb -x "$work"/libstd-rust-web-dev_*_arm64.deb "$work/root"
src="$(find "$work/root" -type d -path "*/rustlib/$target" | head -1)"
[[ -n "$src" ]] || { echo "setup-aarch64: no rustlib/$target in libstd-rust-web-dev:arm64 $version" >&2; exit 1; }
"${sudo[@]}" mkdir -p /usr/lib/rustlib
"${sudo[@]}" cp -a "$src" /usr/lib/rustlib/
have || { echo "setup-aarch64: something is still missing after the install" >&2; exit 1; }
echo "aarch64 toolchain ready: $(/usr/bin/rustc --version), $(qemu-aarch64-static --version | head -1)"

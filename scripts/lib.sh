# Shared by the scripts (sourced): installs Debian packages, as root or through sudo, without
# questions and without recommended extras. Callers decide what is missing.
apt_install() {
  [ "$#" -gt 0 ] || return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Cross targets by short name (aarch64, armv7): the Rust triple, and the Debian packages of its
# C cross compiler and libc when that compiler is missing.
cross_triple() {
  case "$1" in
    aarch64) echo aarch64-unknown-linux-gnu ;;
    armv7) echo armv7-unknown-linux-gnueabihf ;;
    *) echo "unknown target $1 (aarch64 or armv7)" >&2; return 2 ;;
  esac
}
cross_compiler_packages() {
  case "$1" in
    aarch64) command -v aarch64-linux-gnu-gcc >/dev/null || echo gcc-aarch64-linux-gnu libc6-dev-arm64-cross ;;
    armv7) command -v arm-linux-gnueabihf-gcc >/dev/null || echo gcc-arm-linux-gnueabihf libc6-dev-armhf-cross ;;
  esac
}
# The v4l crate's bindgen needs libclang at build time: the package when it is missing.
libclang_packages() {
  ldconfig -p | grep -q 'libclang-[0-9.]*\.so\|libclang\.so' || echo libclang1-14
}
# Installs what cross-building for the named targets needs and is missing: the C cross compilers
# and libc, plus libclang (--libclang) and qemu-user (--qemu). Fails on an unknown name.
cross_install() { # [--libclang] [--qemu] TARGET...
  local need=() t pkgs
  while [ "$#" -gt 0 ]; do
    case "$1" in
      --libclang) need+=($(libclang_packages)) ;;
      --qemu) command -v qemu-aarch64 >/dev/null || need+=(qemu-user) ;;
      *) break ;;
    esac
    shift
  done
  for t in "$@"; do
    cross_triple "$t" >/dev/null || return 2
    read -r -a pkgs <<< "$(cross_compiler_packages "$t")"
    need+=("${pkgs[@]}")
  done
  apt_install $(printf '%s\n' "${need[@]}" | sort -u)
}

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

# --- Targets, by the short names the scripts take: aarch64 and armv7 (the Pi, cross-compiled)
# and x86_64 (package.sh builds it natively).

# Short name -> Debian architecture (aarch64 arm64, armv7 armhf, x86_64 amd64); quietly fails otherwise.
debian_arch() {
  case "$1" in
    aarch64) echo arm64 ;;
    armv7) echo armhf ;;
    x86_64) echo amd64 ;;
    *) return 2 ;;
  esac
}
# Debian architecture -> short name (debian_arch backwards); quietly fails on any other.
target_of_debian_arch() {
  local t
  for t in aarch64 armv7 x86_64; do
    [ "$(debian_arch "$t")" != "$1" ] || { echo "$t"; return 0; }
  done
  return 2
}
# Cross target's short name -> Rust triple; fails with a message (status 2) on any other name.
cross_triple() {
  case "$1" in
    aarch64) echo aarch64-unknown-linux-gnu ;;
    armv7) echo armv7-unknown-linux-gnueabihf ;;
    *) echo "unknown target $1 (aarch64 or armv7)" >&2; return 2 ;;
  esac
}
# Cross target's short name -> GNU type of Debian's cross tools (TYPE-gcc links, /usr/TYPE is the sysroot).
cross_gnu_type() {
  case "$1" in
    aarch64) echo aarch64-linux-gnu ;;
    armv7) echo arm-linux-gnueabihf ;;
    *) return 2 ;;
  esac
}
# The Debian packages of a cross target's C compiler and libc (nothing for other names).
cross_packages() {
  local gnu
  gnu=$(cross_gnu_type "$1") || return 0
  # g++: OpenH264 (the software H.264 encoder) is C++.
  echo "gcc-$gnu g++-$gnu libc6-dev-$(debian_arch "$1")-cross"
}
# Those packages, when that compiler is missing.
cross_compiler_packages() {
  local gnu
  gnu=$(cross_gnu_type "$1") || return 0
  { command -v "$gnu-gcc" && command -v "$gnu-g++"; } >/dev/null || cross_packages "$1"
}
# Adds rustup target TRIPLE when it is not installed; --brief prints only rustup's last line.
ensure_rust_target() { # [--brief] TRIPLE
  local brief=0
  [ "$1" != --brief ] || { brief=1; shift; }
  rustup target list --installed | grep -qx "$1" && return 0
  if [ "$brief" = 1 ]; then rustup target add "$1" 2>&1 | tail -n 1; else rustup target add "$1"; fi
}

# --- libclang: the v4l crate's bindgen needs it at build time.

# The Debian package of libclang (it puts the library under /usr/lib/llvm-14/lib).
libclang_package() {
  echo libclang1-14
}
# That package, when ldconfig knows no libclang.
libclang_packages() {
  # grep reads all of ldconfig's output (no -q): an early exit would SIGPIPE ldconfig, and
  # with pipefail that reads as "missing".
  ldconfig -p | grep 'libclang-[0-9.]*\.so\|libclang\.so' >/dev/null || libclang_package
}
# Installs libclang when it is missing.
ensure_libclang() {
  local pkg
  pkg=$(libclang_packages)
  [ -z "$pkg" ] || apt_install "$pkg"
}
# Points LIBCLANG_PATH at /usr/lib/llvm-14/lib, unless set or absent: bindgen finds libclang-14
# there only through its versioned name.
export_libclang_path() {
  if [ -z "${LIBCLANG_PATH:-}" ] && [ -d /usr/lib/llvm-14/lib ]; then export LIBCLANG_PATH=/usr/lib/llvm-14/lib; fi
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

# --- The VM harnesses (vm-test.sh, power-cut-test.sh): Debian's stock kernel in qemu with a
# busybox initramfs. All three take the work directory (target/vm) first.

# Downloads and unpacks Debian's current linux-image-amd64 into WORK/kernel (once per kernel
# version); prints the kernel version.
vm_kernel() { # WORK
  local work=$1 pkg
  mkdir -p "$work"
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
  if [ ! -d "$work/kernel/lib/modules" ] || [ "$(cat "$work/kernel.pkg" 2>/dev/null)" != "$pkg" ]; then
    rm -rf "$work/kernel" "$work"/*.deb
    (cd "$work" && apt-get download "$pkg" 2>/dev/null)
    dpkg -x "$work"/linux-image-*.deb "$work/kernel"
    echo "$pkg" > "$work/kernel.pkg"
  fi
  local kver
  kver=$(ls "$work/kernel/lib/modules")
  # The .deb ships no modules.dep.
  depmod -b "$work/kernel" "$kver"
  echo "$kver"
}

# Makes the initramfs tree IR: busybox as /bin/sh, INIT as /init, the named kernel modules with
# everything they depend on (from modules.dep), and the programs with the libraries ldd names.
vm_initramfs() { # WORK KVER IR INIT "MODULE..." PROGRAM...
  local work=$1 kver=$2 ir=$3 init=$4 wanted=$5 m b lib mods=""
  shift 5
  rm -rf "$ir" && mkdir -p "$ir"/{bin,sbin,usr/bin,lib,lib64,dev,proc,sys,tmp,etc}
  cp /bin/busybox "$ir/bin/busybox"
  ln -sf busybox "$ir/bin/sh"
  cp "$init" "$ir/init"
  chmod +x "$ir/init"
  for m in $wanted; do
    mods+=" $(awk -F': *' -v m="/$m.ko" 'index($1, m) == length($1) - length(m) + 1 {print $1" "$2}' \
      "$work/kernel/lib/modules/$kver/modules.dep")"
  done
  for m in $(printf '%s\n' $mods | sort -u); do
    mkdir -p "$ir/lib/modules/$kver/$(dirname "$m")"
    cp "$work/kernel/lib/modules/$kver/$m" "$ir/lib/modules/$kver/$m"
  done
  cp "$work/kernel/lib/modules/$kver"/modules.{builtin,builtin.modinfo,order} "$ir/lib/modules/$kver/" 2>/dev/null || true
  depmod -b "$ir" "$kver"
  for b in "$@"; do
    cp "$b" "$ir/usr/bin/"
    for lib in $(ldd "$b" | grep -oE '/[^ ]+'); do
      mkdir -p "$ir$(dirname "$lib")"
      cp -L "$lib" "$ir$lib"
    done
  done
  echo "initramfs: modules: $(printf '%s\n' $mods | sort -u | wc -l), programs: $#"
}

# Packs IR into OUT (gzip'd newc cpio).
vm_pack() { # IR OUT
  (cd "$1" && find . | cpio -o -H newc --quiet | gzip -1) > "$2"
}

# kvm when /dev/kvm works, else tcg (software emulation).
vm_accel() {
  if [ -w /dev/kvm ] && grep -qE 'vmx|svm' /proc/cpuinfo; then echo kvm; else echo tcg; fi
}

# The Python that runs scripts/whep_client.py: a venv in target/ with aiortc from PyPI (an
# independent WebRTC stack), made once. Debian's python3-venv is needed. Prints its path.
whep_python() {
  local venv=target/whep-venv
  if ! "$venv/bin/python" -c 'import aiortc' 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'aiortc==1.16.0' >&2
  fi
  echo "$PWD/$venv/bin/python"
}

# The Python that runs Moonraker for tests/it/moonraker.rs (started there without Klipper): a
# venv in target/ with Moonraker 0.11.0 from PyPI, made once. Debian's python3-venv is needed,
# and libsodium23 at run time (its authorization component signs with libnacl). Prints its path.
moonraker_python() {
  local venv=target/moonraker-venv
  local want='import importlib.metadata as m, moonraker; assert m.version("moonraker") == "0.11.0"'
  if ! "$venv/bin/python" -c "$want" 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'moonraker==0.11.0' >&2
  fi
  echo "$PWD/$venv/bin/python"
}

# Starts camjobd in the background: `camjobd_start BIN CONFIG OUT ERR` runs BIN --config
# CONFIG with stdout to OUT and stderr to ERR, waits (up to 10 s) for the line that says where
# its API listens, and sets `pid` and `addr` (host:port). Exits 1 with its stderr when it does
# not come up. Stop it with `camjobd_stop "$pid"`.
camjobd_start() { # BIN CONFIG OUT ERR
  "$1" --config "$2" > "$3" 2> "$4" &
  pid=$!
  for _ in $(seq 100); do grep -q 'http://' "$3" 2>/dev/null && break; sleep 0.1; done
  addr=$(sed -n 's#.*http://\([^/]*\)/.*#\1#p' "$3" | head -n 1)
  [ -n "$addr" ] || { echo "camjobd did not start:"; cat "$4"; exit 1; }
}

# SIGTERM to a camjobd started by camjobd_start, and wait for its exit.
camjobd_stop() { # PID
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

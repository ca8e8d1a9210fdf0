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

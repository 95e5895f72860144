# tools/lib/packages.sh — sourced by the tools: installs missing Debian packages.
#
# mla_require_packages PKG... installs those of PKG that are not installed, with one
# `apt-get update` first. As root it runs apt-get directly, otherwise through sudo; without
# either it stops with the list to install.
mla_require_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$pkg")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      echo "mla: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
      return 1
    fi
  fi
  echo "mla: installing ${missing[*]}" >&2
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

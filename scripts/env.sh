# shellcheck shell=sh
# Run-time environment for UniSeg3D-ROS with the ros-* PyPI wheels and the
# uniseg3d_msgs package built by scripts/build_msgs.sh into ./install.
#
#   . scripts/env.sh          # from the repository root (POSIX sh, bash, zsh)
#
# Sets (prepending, without duplicates):
#   PYTHONPATH         <repo>/install/lib/python3.X/site-packages  (import uniseg3d_msgs)
#   LD_LIBRARY_PATH    <repo>/install/lib                          (its C type support libraries)
#   AMENT_PREFIX_PATH  <repo>/install:<venv>                        (ament index lookups)
#   PATH               <venv>/bin                                   (python, uniseg3d_node, ...)
#   RMW_IMPLEMENTATION rmw_fastrtps_cpp (unless already set)
# The wheels' ros_wheels_bootstrapper.pth re-executes the venv's Python once with
# its own library dirs added to LD_LIBRARY_PATH; it keeps the entries set here, so
# child processes inherit a complete environment.
#
# The repository root is taken from UNISEG3D_ROOT, else from this file's location
# (bash, zsh), else the current directory (POSIX sh, e.g. make). VENV overrides
# the venv path (default <repo>/.venv).

if [ -n "${UNISEG3D_ROOT:-}" ]; then
  _u3d_root="$UNISEG3D_ROOT"
elif [ -n "${BASH_SOURCE:-}" ]; then
  # shellcheck disable=SC3028,SC3054
  _u3d_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
elif [ -n "${ZSH_VERSION:-}" ]; then
  # shellcheck disable=SC2296
  _u3d_root="$(cd "$(dirname "${(%):-%x}")/.." && pwd)"
else
  _u3d_root="$(pwd)"
fi
_u3d_ok=1
if [ ! -f "$_u3d_root/msg/package.xml" ]; then
  _u3d_ok=0
  echo "env.sh: $_u3d_root is not the UniSeg3D-ROS repository root (set UNISEG3D_ROOT or source from the root)" >&2
else
  case "${VENV:-.venv}" in
    /*) _u3d_venv="${VENV}" ;;
    *) _u3d_venv="$_u3d_root/${VENV:-.venv}" ;;
  esac
  _u3d_prefix="$_u3d_root/install"

  # _u3d_prepend VAR DIR: put DIR first in the colon list VAR unless present.
  _u3d_prepend() {
    eval "_u3d_cur=\${$1:-}"
    case ":$_u3d_cur:" in
      *":$2:"*) ;;
      *) if [ -n "$_u3d_cur" ]; then eval "export $1=\"\$2:\$_u3d_cur\""; else eval "export $1=\"\$2\""; fi ;;
    esac
    unset _u3d_cur
  }

  _u3d_prepend AMENT_PREFIX_PATH "$_u3d_venv"
  _u3d_prepend AMENT_PREFIX_PATH "$_u3d_prefix"
  _u3d_prepend LD_LIBRARY_PATH "$_u3d_prefix/lib"
  _u3d_prepend PATH "$_u3d_venv/bin"
  _u3d_site=""
  for _u3d_d in "$_u3d_prefix"/lib/python3*/site-packages; do
    [ -d "$_u3d_d" ] && _u3d_site="$_u3d_d"
  done
  if [ -n "$_u3d_site" ]; then
    _u3d_prepend PYTHONPATH "$_u3d_site"
  else
    echo "env.sh: uniseg3d_msgs is not built yet ($_u3d_prefix has no lib/python3*/site-packages); run: bash scripts/build_msgs.sh" >&2
  fi
  export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
  unset -f _u3d_prepend
  unset _u3d_d _u3d_site _u3d_venv _u3d_prefix
fi
unset _u3d_root
# Status of `. scripts/env.sh`: non-zero when the repository root was not found.
[ "$_u3d_ok" = 1 ] && unset _u3d_ok

#!/usr/bin/env bash
# Build the uniseg3d_msgs interface package (msg/), and tf2_msgs (compat/) when the
# venv has none, against the ROS 2 wheels in the venv and install them into
# ./install. Usage: bash scripts/build_msgs.sh
#
# Env overrides: VENV (default .venv), MSGS_PREFIX (default ./install),
# MSGS_BUILD (default ./build: one sub-directory per package), JOBS (default: nproc).
#
# Steps: (1) point the wheels' exported CMake files, which name the wheel build
# machine's Python and numpy include dirs, at this interpreter's (idempotent);
# (2) cmake configure (only when needed) + make + make install. A second run
# with nothing changed only re-checks timestamps (about a second).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(cd "$ROOT" && realpath -m "${VENV:-.venv}")"
PREFIX="$(cd "$ROOT" && realpath -m "${MSGS_PREFIX:-install}")"
BUILD_ROOT="$(cd "$ROOT" && realpath -m "${MSGS_BUILD:-build}")"
PY="$VENV/bin/python"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"

die() { echo "build_msgs.sh: error: $*" >&2; exit 1; }

[ -x "$PY" ] || die "no Python at $PY; run 'make setup' (or set VENV=...)"
[ -f "$ROOT/msg/package.xml" ] || die "no interface package at $ROOT/msg"
for share in rosidl_default_generators ament_cmake geometry_msgs sensor_msgs std_msgs builtin_interfaces action_msgs unique_identifier_msgs; do
  [ -d "$VENV/share/$share" ] || die "$VENV/share/$share is missing; install requirements/ros-build.txt and requirements/base.txt"
done

# The ros-* wheels' bootstrapper re-executes Python once with LD_LIBRARY_PATH
# set; do the same for every tool the build runs (the rosidl generators import
# rclpy-side C extensions).
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
LIBS="$VENV/lib"
for d in "$VENV"/lib/python3*/site-packages/ros_*.libs; do
  [ -d "$d" ] && LIBS="$LIBS:$d"
done
export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$VENV/bin:$PATH"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"

# (1) Patch the build machine's include dirs baked into the wheels' CMake exports.
read -r PY_INCLUDE NP_INCLUDE < <("$PY" -c \
  'import sysconfig, numpy; print(sysconfig.get_paths()["include"], numpy.get_include())') \
  || die "cannot query $PY for its include dirs (is numpy installed?)"
[ -f "$PY_INCLUDE/Python.h" ] || die "Python headers not found at $PY_INCLUDE (install python3-dev for this interpreter)"
WHEEL_PY_INCLUDE="/opt/python/cp311-cp311/include/python3.11"
WHEEL_NP_INCLUDE="/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include"
mapfile -t stale < <(grep -rlF -e "$WHEEL_PY_INCLUDE" -e "$WHEEL_NP_INCLUDE" "$VENV/share" --include='*.cmake' || true)
if [ "${#stale[@]}" -gt 0 ]; then
  echo "build_msgs.sh: pointing ${#stale[@]} wheel CMake export(s) at $PY_INCLUDE and $NP_INCLUDE"
  sed -i -e "s#$WHEEL_PY_INCLUDE#$PY_INCLUDE#g" -e "s#$WHEEL_NP_INCLUDE#$NP_INCLUDE#g" "${stale[@]}"
fi

# (2) Configure once (or when the cache is from another source/venv), then build.
CMAKE="$VENV/bin/cmake"
[ -x "$CMAKE" ] || CMAKE="$(command -v cmake || true)"
[ -n "$CMAKE" ] || die "cmake not found (pip install cmake, or apt-get install cmake)"
command -v make >/dev/null || die "make not found"
command -v c++ >/dev/null || command -v g++ >/dev/null || die "no C++ compiler (apt-get install g++)"

# build_pkg NAME SRC: configure (when needed), build and install one interface package.
# The configuration key: a build tree made for another venv, prefix or source is
# thrown away. Edits to .msg files need no reconfigure (rosidl tracks its inputs).
build_pkg() {
  local name="$1" src="$2" build="$BUILD_ROOT/$1"
  local key="src=$src venv=$VENV prefix=$PREFIX python=$PY_INCLUDE numpy=$NP_INCLUDE"
  if [ ! -f "$build/CMakeCache.txt" ] || [ "$(cat "$build/.configured" 2>/dev/null)" != "$key" ]; then
    rm -rf "$build" && mkdir -p "$build"
    echo "build_msgs.sh: configuring $name in $build"
    # RPATH: installed libraries find each other ($ORIGIN), the Python extension
    # modules in lib/python3.x/site-packages/<pkg> find lib/ ($ORIGIN/../../..),
    # and both find the wheels' libraries in the venv.
    "$CMAKE" -S "$src" -B "$build" \
      -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_INSTALL_PREFIX="$PREFIX" \
      -DPython3_EXECUTABLE="$PY" \
      -DPYTHON_EXECUTABLE="$PY" \
      -DBUILD_TESTING=OFF \
      "-DCMAKE_INSTALL_RPATH=\$ORIGIN;\$ORIGIN/../../..;$VENV/lib" \
      > "$build/configure.log" 2>&1 \
      || { tail -n 40 "$build/configure.log" >&2; die "cmake configure of $name failed (full log: $build/configure.log)"; }
    echo "$key" > "$build/.configured"
  fi
  echo "build_msgs.sh: building $name ($JOBS jobs)"
  "$CMAKE" --build "$build" -j "$JOBS" > "$build/build.log" 2>&1 \
    || { tail -n 40 "$build/build.log" >&2; die "build of $name failed (full log: $build/build.log)"; }
  "$CMAKE" --install "$build" > "$build/install.log" 2>&1 \
    || { tail -n 40 "$build/install.log" >&2; die "install of $name failed (full log: $build/install.log)"; }
}

# tf2_msgs (TFMessage, for /tf and /tf_static) has no PyPI wheel: build the stand-in in compat/
# unless the venv already provides tf2_msgs.
if [ -d "$VENV/share/tf2_msgs" ]; then
  echo "build_msgs.sh: tf2_msgs provided by $VENV; not building compat/tf2_msgs"
else
  build_pkg tf2_msgs "$ROOT/compat/tf2_msgs"
fi
build_pkg uniseg3d_msgs "$ROOT/msg"

# Smoke check: the generated Python package imports with the run-time env.
# shellcheck source=scripts/env.sh
. "$ROOT/scripts/env.sh"
"$PY" -c 'from uniseg3d_msgs.msg import InstanceResult; from uniseg3d_msgs.srv import Segment; from uniseg3d_msgs.action import Segment as SegmentAction; from tf2_msgs.msg import TFMessage; InstanceResult(); Segment.Request(); SegmentAction.Goal(); TFMessage()' \
  || die "the installed uniseg3d_msgs or tf2_msgs does not import (see above)"
echo "build_msgs.sh: uniseg3d_msgs and tf2_msgs installed in $PREFIX"

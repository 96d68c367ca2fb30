#!/usr/bin/env bash
# Installs every Debian package ember needs to build, test and run. Idempotent: when everything is
# already present it prints nothing and touches nothing. Usage: install-deps.sh [--bench] [--fuzz] [--docker]
#   --bench   also the packages the benchmarks need (Debian's python3-torch for the PyTorch anchor)
#   --fuzz    also clang and its runtime libraries (libFuzzer, ASan, UBSan), for `make fuzz`
#   --docker  also debootstrap, to seed the Dockerfile's base image on machines with no registry
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  protobuf-c-compiler libprotobuf-c-dev
  libzmq3-dev
  libmujoco-dev libmujoco-samples
  libqhull-dev   # MuJoCo's CMake package names /usr/include/libqhull_r as an include directory
  libgl-dev libopengl-dev   # and calls find_dependency(OpenGL), though ember renders nothing
  libopenblas-dev
  check libsubunit-dev
  libcyaml-dev libyaml-dev   # libcyaml's pkg-config links -lyaml, which its -dev package does not pull in
  libmicrohttpd-dev libzstd-dev
  gnuplot-nox
  iproute2 procps
)
# libFuzzer's runtime: bookworm names it after clang's major version (libclang-rt-14-dev); later
# Debian releases also have the unversioned libclang-rt-dev. Whichever the archive knows.
fuzz_runtime_package() {
  if apt-cache show libclang-rt-dev >/dev/null 2>&1; then echo libclang-rt-dev; else echo libclang-rt-14-dev; fi
}
for arg in "$@"; do
  case "$arg" in
    --bench) packages+=(python3 python3-torch) ;;
    --fuzz) packages+=(clang "$(fuzz_runtime_package)") ;;
    --docker) packages+=(debootstrap) ;;
    *) echo "install-deps.sh: unknown option '$arg' (expected --bench, --fuzz or --docker)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "install-deps.sh: missing packages (${missing[*]}) and not root; run as root or install sudo" >&2
    exit 1
  fi
fi
echo "install-deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

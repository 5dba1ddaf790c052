#!/usr/bin/env bash
# Pack the generator (tools/gen_handlers.py, the modules it runs `new` and
# `build` with, and the templates) into a one-file executable.
#
#   bash tools/build_gen_exe.sh [DIST_DIR]    # default DIST_DIR: dist
#
# Produces DIST_DIR/netcore-gen, which takes the same arguments as
# `python tools/gen_handlers.py` and needs no Python install. Set PYTHON to
# pick the interpreter that has pyinstaller and jinja2 (default: python3).
set -euo pipefail

tools="$(cd "$(dirname "$0")" && pwd)"
dist="$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd)"
# PyInstaller's work files go to a throwaway directory, not the checkout.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The templates land at the bundle root's templates/, where gen_handlers
# looks for them under sys._MEIPASS when frozen, and netcore's _version.py
# at the root, for --version.
"${PYTHON:-python3}" -m PyInstaller --onefile --noconfirm --log-level WARN \
    --name netcore-gen \
    --paths "$tools" --hidden-import new_project --hidden-import codegen \
    --add-data "$tools/templates:templates" \
    --add-data "$tools/../src/netcore/_version.py:." \
    --distpath "$dist" --workpath "$work/build" --specpath "$work" \
    "$tools/gen_handlers.py"

#!/usr/bin/env bash
# Pack netcore-server into a one-file executable.
#
#   bash tools/build_server_exe.sh [DIST_DIR]    # default DIST_DIR: dist
#
# Produces DIST_DIR/netcore-server, which takes the same arguments as the
# installed `netcore-server` and needs no Python install. It bundles what the
# chosen interpreter imports: netcore must be installed there (`pip install .`,
# so that its compiled extensions exist) together with pyinstaller; uvloop is
# bundled when that interpreter has it. Set PYTHON to pick the interpreter
# (default: python3). The executable runs on machines like the one it was
# built on (same OS and CPU, a glibc at least as new).
set -euo pipefail

dist="$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd)"
py="${PYTHON:-python3}"
# PyInstaller's work files go to a throwaway directory, not the checkout.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$py" -c "import netcore.session, netcore_packets.server_dispatch" || {
    echo "build_server_exe: netcore is not installed (compiled) for $py: pip install . first" >&2
    exit 1
}

cat > "$work/netcore_server_exe.py" <<'EOF'
import sys

from netcore_game.cli import main

sys.exit(main())
EOF

# The compiled modules import one another (and netcore_packets.*_pb2) from C, where
# PyInstaller's import analysis cannot see them: collect the packages whole.
# The entry script is named for none of them (netcore_server is the server
# layer's package). uvloop and protobuf are found through their Python
# imports and hooks; picows
# is imported by netcore.websocket's C code, and netcore_game carries the chat
# page (web/chat.html) as data.
# Where the packages are imported from: site-packages, or the checkout's src/
# for an editable install (`pip install -e .`), whose import hook PyInstaller's
# analysis does not follow.
src="$("$py" -c 'import os, netcore_game; print(os.path.dirname(os.path.dirname(netcore_game.__file__)))')"

"$py" -m PyInstaller --onefile --noconfirm --log-level WARN \
    --name netcore-server \
    --paths "$src" \
    --collect-submodules netcore \
    --collect-submodules netcore_packets \
    --collect-submodules netcore_server \
    --collect-submodules netcore_game \
    --collect-data netcore_game \
    --collect-submodules picows \
    --distpath "$dist" --workpath "$work/build" --specpath "$work" \
    "$work/netcore_server_exe.py"
echo "build_server_exe: wrote $dist/netcore-server"

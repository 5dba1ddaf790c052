"""The documentation builds: the API reference (autodoc over the installed
netcore's docstrings), the "Build your own game" tutorial and the guides, with
sphinx -W, so a broken reference, a docstring that is not valid reST or a
public name that disappears fails the suite instead of the docs."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx", reason="sphinx is not installed (pip install '.[test]')")
pytest.importorskip("myst_parser", reason="myst-parser is not installed (pip install '.[test]')")

ROOT = Path(__file__).resolve().parent.parent
# The public surface the reference must document, with some of its members.
DOCUMENTED = [
    "netcore.Session", "netcore.Session.on_connected", "netcore.Session.on_disconnected",
    "netcore.Session.send", "netcore.Session.disconnect", "netcore.PacketSession",
    "netcore.PacketSession.on_recv_packet", "netcore.send_to_all",
    "netcore.service.Service", "netcore.ServerService", "netcore.ServerService.start",
    "netcore.ClientService", "netcore.ClientService.start", "netcore.JobQueue",
    "netcore.JobQueue.do_async", "netcore.JobQueue.do_timer", "netcore.SendBufferPool",
    "netcore.SendBufferPool.reserve", "netcore.SendBuffer.commit", "netcore.make_packet",
    "netcore.Disconnect", "netcore.DisconnectReason", "netcore.DisconnectReason.SLOW_CONSUMER",
    "netcore.ProtocolError", "netcore.run",
]


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    out = tmp_path_factory.mktemp("html")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(out / ".doctrees"), str(ROOT / "docs"), str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_the_api_reference_documents_the_public_surface(html):
    api = (html / "api.html").read_text()
    missing = [name for name in DOCUMENTED if f'id="{name}"' not in api]
    assert not missing
    # With their docstrings, not only their names (a compiled module
    # documented from its .pyi stub would have none).
    assert "The connection is gone (called once)" in api
    assert "A serial executor of jobs" in api
    assert "Accepts WebSocket connections into a ServerService" in api


def test_the_tutorial_follows_the_template(html):
    tutorial = (html / "tutorial.html").read_text()
    assert "Build your own game" in tutorial
    source = (ROOT / "docs" / "tutorial.md").read_text()
    # Its files are the ones `netcore-gen new` writes.
    from netcore_tools import new_project
    for path in new_project.FILES:
        if path.startswith(("src/", "proto/")) and not path.endswith("py.typed"):
            shown = path.format(name="space_race")
            assert f"`{shown}`" in source, shown
    assert re.search(r"netcore-gen new space-race\b", source)


def test_every_guide_is_in_the_docs(html):
    for guide in sorted((ROOT / "docs").glob("*.md")):
        assert (html / f"{guide.stem}.html").is_file(), guide.name

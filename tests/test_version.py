"""One version, in src/netcore/_version.py: the distribution's metadata, netcore.__version__
and the --version of both commands all say the same."""
import importlib.metadata
import subprocess
import sys

import pytest

import netcore
from netcore import _version


def test_the_package_and_the_installed_distribution_carry_the_same_version():
    assert netcore.__version__ == _version.__version__
    assert importlib.metadata.version("netcore") == netcore.__version__


@pytest.mark.parametrize("command", ["netcore-server", "netcore-dummy"])
def test_version_flag_of_the_installed_command_prints_the_distribution_version(command):
    # The command as the distribution declares it (what pip turns into a script).
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name=command)
    assert entry.dist.name == "netcore"
    module, func = entry.value.split(":")
    proc = subprocess.run(
        [sys.executable, "-c", f"import sys; from {module} import {func}; sys.exit({func}())",
         "--version"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{command} {importlib.metadata.version('netcore')}\n"

"""The coverage-guided fuzz targets (tests/fuzz/fuzz_*.py), briefly, as CI
runs them: every input of each kept corpus replayed (no fuzzer needed), then
each target under atheris for a bounded number of runs from its corpus (a
fixed seed; new inputs go to a scratch folder, never into the kept corpus).
A long run of each, with its figures, is benchmarks/fuzz_coverage.py's.

atheris has wheels for Linux x86_64 only (the test extra installs it there):
elsewhere the atheris runs skip, saying so, and with
NETCORE_REQUIRE_ATHERIS=1 (CI) they fail instead.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TARGETS = ("recv", "dispatch", "websocket", "wire", "config")
# Runs per target after its corpus: about 10 s each on CI's machine (2 cores),
# capped by time as well (SMOKE_SECONDS), since a slower machine must not
# make the suite slow.
RUNS = {"recv": 60000, "dispatch": 60000, "websocket": 20000, "wire": 150000, "config": 2500}
SMOKE_SECONDS = 30


def target(name):
    return [sys.executable, str(HERE / f"fuzz_{name}.py")]


@pytest.mark.parametrize("name", TARGETS)
def test_every_input_of_the_kept_corpus_holds(name):
    corpus = HERE / "corpus" / name
    assert len(list(corpus.iterdir())) >= 5, f"the kept corpus of {name} is missing"
    r = subprocess.run(target(name) + ["--replay", str(corpus)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "all hold" in r.stdout


def have_atheris():
    try:
        import atheris  # noqa: F401
    except ImportError:
        why = ("atheris is not installed (pip install atheris: the test extra installs it on "
               "Linux x86_64)")
        if os.environ.get("NETCORE_REQUIRE_ATHERIS") == "1":
            pytest.fail(why)
        pytest.skip(why)


@pytest.mark.parametrize("name", TARGETS)
def test_the_fuzz_target_runs_briefly_from_its_corpus(name, tmp_path):
    have_atheris()
    scratch = tmp_path / "new"
    scratch.mkdir()
    r = subprocess.run(
        target(name) + [str(scratch), str(HERE / "corpus" / name), f"-runs={RUNS[name]}",
                        f"-max_total_time={SMOKE_SECONDS}", "-seed=1", "-timeout=20",
                        "-rss_limit_mb=2048", f"-artifact_prefix={tmp_path}/",
                        "-print_final_stats=1"],
        capture_output=True, text=True, timeout=SMOKE_SECONDS + 60, cwd=tmp_path)
    out = r.stdout + r.stderr
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))
    assert r.returncode == 0 and not crashes, \
        f"fuzz_{name} broke its property (inputs: {crashes}):\n{out[-6000:]}"
    executed = int(re.search(r"stat::number_of_executed_units: (\d+)", out).group(1))
    cov = int(re.search(r"#\d+\s+DONE\s+cov: (\d+)", out).group(1))
    assert executed >= min(RUNS[name], 1000) and cov > 0, out[-2000:]

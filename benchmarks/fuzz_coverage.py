"""A long coverage-guided run of each fuzz target (tests/fuzz/fuzz_*.py),
with its executions, coverage and findings: what CI's brief runs
(tests/fuzz/test_fuzz.py, about 10 s each) cannot afford.

Each target starts from its kept corpus (tests/fuzz/corpus/<name>/) and
writes what it finds to a work folder (--work, default
build/fuzz-coverage/<name>/: never into the kept corpus; copy an input from
there to the kept corpus, or a crash file, by hand, once it earns its place).
libFuzzer's own figures are reported: executions, their rate, `cov` (the
coverage points reached: Python branches of the instrumented modules, and
the C edges of the extensions on a sanitizer build) and `ft` (features:
points and their hit counts), the corpus it ended with, and each failure
with the input that caused it.

    python benchmarks/fuzz_coverage.py [--seconds 300] [--targets recv,wire] [--python PY]

On the plain build the Cython extensions report no coverage of their own
(atheris sees the Python side and the oracles); on the sanitizer build they
do, and every execution runs under ASan and UBSan:

    bash tools/sanitize.sh build
    python benchmarks/fuzz_coverage.py --sanitized --seconds 300

(--sanitized runs the targets with build/sanitize/venv's interpreter and
the sanitizers' runtime preloaded, as tools/sanitize.sh does.)

Figures: see benchmarks/README.md, "Coverage-guided fuzzing".
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "tests" / "fuzz"
TARGETS = ("recv", "dispatch", "websocket", "wire", "config")


def sanitized_env(python: str) -> dict:
    lib = subprocess.run([python, "-c", "import atheris, os; print(os.path.join("
                          "atheris.path(), 'asan_with_fuzzer.so'))"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return {**os.environ, "LD_PRELOAD": lib,
            "ASAN_OPTIONS": "detect_leaks=0:allocator_may_return_null=1",
            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}


def run(name: str, args, python: str, env) -> dict:
    work = Path(args.work) / name
    work.mkdir(parents=True, exist_ok=True)
    artifacts = work.parent / f"{name}-artifacts"
    artifacts.mkdir(exist_ok=True)
    cmd = [python, str(FUZZ / f"fuzz_{name}.py"), str(work), str(FUZZ / "corpus" / name),
           f"-max_total_time={args.seconds}", "-timeout=30", "-rss_limit_mb=4096",
           "-print_final_stats=1", f"-artifact_prefix={artifacts}/"]
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env,
                       timeout=args.seconds + 300)
    out = r.stdout + r.stderr
    (work.parent / f"{name}.log").write_text(out)

    def stat(key, cast=int):
        m = re.search(rf"stat::{key}:\s+(\d+)", out)
        return cast(m.group(1)) if m else None

    done = re.findall(r"#(\d+)\s+(?:DONE|pulse|NEW|REDUCE|INITED)\s+cov: (\d+) ft: (\d+) "
                      r"corp: (\d+)/(\S+)", out)
    inited = re.search(r"INITED\s+cov: (\d+) ft: (\d+)", out)
    last = done[-1] if done else (None, None, None, None, None)
    return {
        "target": name, "rc": r.returncode, "seconds": time.monotonic() - t0,
        "executions": stat("number_of_executed_units"),
        "per_second": stat("average_exec_per_sec"),
        "cov_start": int(inited.group(1)) if inited else None,
        "ft_start": int(inited.group(2)) if inited else None,
        "cov": int(last[1]) if last[1] else None, "ft": int(last[2]) if last[2] else None,
        "corpus": f"{last[3]} inputs, {last[4]}" if last[3] else None,
        "peak_rss_mb": stat("peak_rss_mb"),
        "findings": sorted(p.name for p in artifacts.iterdir()),
        "error": (re.search(r"(=== Uncaught Python exception: ===.*?)\n\n", out, re.S)
                  or re.search(r"(ERROR: (?:AddressSanitizer|libFuzzer).*)", out)
                  or re.search(r"(runtime error: .*)", out)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=300, help="per target (default 300)")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--sanitized", action="store_true",
                    help="run on tools/sanitize.sh's build (build/sanitize/venv)")
    ap.add_argument("--python", default=None, help="the interpreter (default: this one)")
    ap.add_argument("--work", default=str(ROOT / "build" / "fuzz-coverage"))
    args = ap.parse_args()
    python = args.python or (str(ROOT / "build/sanitize/venv/bin/python") if args.sanitized
                             else sys.executable)
    env = sanitized_env(python) if args.sanitized else dict(os.environ)
    failed = 0
    print(f"{'target':<10} {'executions':>11} {'exec/s':>7} {'cov':>11} {'ft':>11} "
          f"{'corpus':>20} {'rss MB':>6}  findings")
    for name in args.targets.split(","):
        res = run(name, args, python, env)
        failed |= res["rc"] != 0
        cov = f"{res['cov_start']}->{res['cov']}"
        ft = f"{res['ft_start']}->{res['ft']}"
        finding = ", ".join(res["findings"]) or "none"
        print(f"{name:<10} {res['executions'] or 0:>11,} {res['per_second'] or 0:>7,} "
              f"{cov:>11} {ft:>11} {res['corpus'] or '-':>20} {res['peak_rss_mb'] or 0:>6}  "
              f"{finding}", flush=True)
        if res["rc"] != 0 and res["error"]:
            print("    " + res["error"].group(1).strip().replace("\n", "\n    ")[:3000])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

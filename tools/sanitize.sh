#!/usr/bin/env bash
# The extensions under AddressSanitizer and UndefinedBehaviorSanitizer: build
# them once with clang into a virtual environment of their own, then run the
# coverage-guided fuzz targets (tests/fuzz/fuzz_*.py, now with the C code's
# own coverage) and the whole test suite on that build.
#
#   bash tools/sanitize.sh [build|fuzz|suite|all]...     (default: all)
#
#   NETCORE_SANITIZE      the -fsanitize list (default: address,undefined)
#   SANITIZE_VENV         where the environment goes (default: build/sanitize/venv;
#                         build/ is ignored by git, and this survives `rm -rf build`
#                         only by being rebuilt)
#   SANITIZE_FUZZ_SECONDS seconds per fuzz target (default: 60)
#   SANITIZE_PYTEST_ARGS  arguments for the suite's pytest (default: -q -m "not slow":
#                         the slow tests build and test other, plain copies of
#                         netcore (wheels, executables, new projects) that this
#                         build never reaches, and the preload slows their
#                         compilers past their timeouts; "-q" runs them too)
#
# The sanitizers' runtime must be the first library of the process: a Python
# host is not built with it, so it is preloaded (LD_PRELOAD). It is atheris's
# asan_with_fuzzer.so (ASan, with UBSan's handlers, and libFuzzer linked in so
# that the extensions' coverage counters reach atheris: atheris's
# native_extension_fuzzing.md), or clang's libclang_rt.asan where atheris is
# missing. The preload is in force for every process the suite starts (the
# servers it spawns are Python too) but Chromium, run through a shim without
# it (it is not built for it, and dies); leak detection is off, since CPython
# leaves its start-up allocations to the exit (ASAN_OPTIONS=detect_leaks=0).
# UBSan reports do not stop the suite: each goes to the log
# ($VENV/../ubsan.*), and the summary counts them; ASan stops at its first
# report, as it always does.
#
# Needs clang and compiler-rt (Debian/Ubuntu: apt-get install clang
# libclang-rt-dev; installed here when missing and run as root). Linux x86_64.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

sanitize="${NETCORE_SANITIZE:-address,undefined}"
venv="${SANITIZE_VENV:-$root/build/sanitize/venv}"
logs="$(dirname "$venv")"
seconds="${SANITIZE_FUZZ_SECONDS:-60}"
py="${PYTHON:-python3}"
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(build fuzz suite)
[ "${steps[0]}" != all ] || steps=(build fuzz suite)

say() { echo "sanitize: $*" >&2; }

need_clang() {
    if command -v clang >/dev/null && [ -e "$(clang -print-file-name=libclang_rt.asan-x86_64.so)" ]; then
        return 0
    fi
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        say "installing clang and compiler-rt (apt-get)"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang libclang-rt-dev >/dev/null
    fi
    command -v clang >/dev/null || { say "clang is not installed (apt-get install clang libclang-rt-dev)"; exit 1; }
}

build() {
    need_clang
    say "building into $venv with clang -fsanitize=$sanitize,fuzzer-no-link"
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    # The build products of a sanitizer build go to build/sanitize/ (setup.py).
    NETCORE_SANITIZE="$sanitize" CC=clang LDSHARED="clang -shared" \
        "$venv/bin/python" -m pip install -q ".[test]"
    local so
    # (Not imported here: without the preloaded runtime its symbols are missing.)
    so="$(find "$venv" -path '*site-packages/netcore/session*.so' | head -1)"
    nm -D "$so" | grep -q __asan_report || { say "$so is not instrumented"; exit 1; }
    nm -D "$so" | grep -q __sanitizer_cov_8bit_counters_init \
        || { say "$so has no coverage counters"; exit 1; }
    say "built: $(nm -D "$so" | grep -c ' U __asan_') ASan and $(nm -D "$so" | grep -c ' U __ubsan_') UBSan entry points in $(basename "$so")"
}

preload() {
    local lib
    lib="$("$venv/bin/python" -c 'import atheris, os; print(os.path.join(atheris.path(), "asan_with_fuzzer.so"))' 2>/dev/null)" || true
    if [ -z "$lib" ] || [ ! -e "$lib" ]; then
        lib="$(clang -print-file-name=libclang_rt.asan-x86_64.so)"
    fi
    echo "$lib"
}

run_sanitized() {
    # NETCORE_SANITIZED: the tests that bound the server's resident size
    # allow for ASan's quarantine and shadow memory (tests/adversarial).
    NETCORE_SANITIZED=1 LD_PRELOAD="$(preload)" \
    ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:handle_segv=1:abort_on_error=0:${ASAN_OPTIONS_EXTRA:-}" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=${UBSAN_HALT:-0}:log_path=$logs/ubsan:${UBSAN_OPTIONS_EXTRA:-}" \
        "$@"
}

ubsan_reports() {
    cat "$logs"/ubsan.* 2>/dev/null | grep -c "runtime error" || true
}

fuzz() {
    local failed=0 work target name
    rm -f "$logs"/ubsan.*
    for target in tests/fuzz/fuzz_*.py; do
        name="$(basename "$target" .py)"; name="${name#fuzz_}"
        work="$logs/corpus/$name"
        mkdir -p "$work"
        say "fuzzing $name for ${seconds}s on the sanitized build"
        if ! UBSAN_HALT=1 run_sanitized "$venv/bin/python" "$target" "$work" "tests/fuzz/corpus/$name" \
                -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
                -artifact_prefix="$logs/$name-" >"$logs/fuzz-$name.log" 2>&1; then
            say "fuzz target $name FAILED: see $logs/fuzz-$name.log"
            tail -30 "$logs/fuzz-$name.log" >&2
            failed=1
        fi
        grep -E "^#[0-9]+ +DONE|stat::number_of_executed_units" "$logs/fuzz-$name.log" | tr '\n' ' ' >&2
        echo >&2
    done
    return $failed
}

unpreloaded_browsers() {
    # Chromium is no Python and not built with the sanitizers; under the
    # preload it dies at start. The chat-page tests find it on PATH: a shim
    # runs the real one without the preload.
    local bin="$logs/bin" name real
    mkdir -p "$bin"
    for name in chromium chromium-browser google-chrome; do
        real="$(PATH="${PATH#"$bin:"}" command -v "$name" || true)"
        [ -n "$real" ] || continue
        printf '#!/bin/sh\nunset LD_PRELOAD\nexec %s "$@"\n' "$real" >"$bin/$name"
        chmod +x "$bin/$name"
    done
    echo "$bin"
}

suite() {
    rm -f "$logs"/ubsan.*
    PATH="$(unpreloaded_browsers):$PATH"
    local rc=0 args
    if [ -n "${SANITIZE_PYTEST_ARGS:-}" ]; then
        read -r -a args <<<"$SANITIZE_PYTEST_ARGS"
    else
        args=(-q -m "not slow")
    fi
    say "the suite on the sanitized build (pytest ${args[*]})"
    # A 32 MiB quarantine (ASan's default is 256): use after free is still
    # caught for what was freed recently, and the resident-size bounds of
    # the adversarial cases measure the server, not the quarantine.
    ASAN_OPTIONS_EXTRA="quarantine_size_mb=32:${ASAN_OPTIONS_EXTRA:-}" \
        run_sanitized "$venv/bin/python" -m pytest "${args[@]}" -p no:cacheprovider || rc=$?
    say "suite exit status $rc; UBSan reports: $(ubsan_reports) (in $logs/ubsan.*)"
    return $rc
}

status=0
for step in "${steps[@]}"; do
    case "$step" in
        build) build ;;
        fuzz) fuzz || status=1 ;;
        suite) suite || status=1 ;;
        *) say "unknown step $step (build, fuzz, suite, all)"; exit 2 ;;
    esac
done
exit $status

#!/usr/bin/env bash
# One entry point for set-up and the two jobs the README names:
#   bash run.sh demo [ARGS...]   set up (first time only), then run `ufinebench demo`
#   bash run.sh test [ARGS...]   set up (first time only), then run the test suite
#   bash run.sh lint             set up, then ruff (src, tests, benchmarks, examples) and mypy (src), as CI does
#   bash run.sh setup            only set up
# Set-up makes .venv with Python 3.11 and installs the package with its test extras; it is
# redone only when pyproject.toml or run.sh change. torch==2.13.0 is installed first (a CPU build
# from local disk here); pyproject.toml accepts a range, so the package keeps a user's own build.
set -euo pipefail
cd "$(dirname "$0")"

VENV=${UFINEBENCH_VENV:-.venv}
PYTHON=${PYTHON:-python3}

setup() {
    local stamp="$VENV/.ufinebench-setup" want
    want=$(cat pyproject.toml run.sh | sha256sum | cut -c1-16)
    if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    echo "run.sh: setting up $VENV (first run takes about a minute)" >&2
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip 2>&1 | grep -v '^WARNING: Location' >&2 || true
    "$VENV/bin/python" -m pip install --quiet "torch==2.13.0" 2>&1 | grep -v '^WARNING: Location' >&2 || true
    "$VENV/bin/python" -m pip install --quiet -e ".[test]" 2>&1 | grep -v '^WARNING: Location' >&2 || true
    # CLIP's BPE vocabulary file ships inside clip-anytorch; --no-deps keeps its torchvision out.
    "$VENV/bin/python" -m pip install --quiet --no-deps "clip-anytorch==2.6.0" 2>&1 | grep -v '^WARNING: Location' >&2 || true
    "$VENV/bin/python" -c "import ufinebench, torch, numba; from ufinebench.data.tokenizer import find_clip_vocab; find_clip_vocab()" \
        || { echo "run.sh: set-up failed (see pip's messages above)" >&2; exit 1; }
    echo "$want" > "$stamp"
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case "$cmd" in
    setup) setup ;;
    demo) setup; exec "$VENV/bin/ufinebench" demo "$@" ;;
    test) setup; exec "$VENV/bin/python" -m pytest -q "$@" ;;
    lint) setup; "$VENV/bin/ruff" check src tests benchmarks examples && exec "$VENV/bin/mypy" src ;;
    *) echo "usage: bash run.sh {demo|test|lint|setup} [ARGS...]" >&2; exit 2 ;;
esac

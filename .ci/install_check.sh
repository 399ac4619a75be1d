#!/usr/bin/env bash
# The package as a user installs it: `pip install .` (not editable) into an empty virtual
# environment, then the demo's miniature and a preset's dry run from a folder outside the
# repository, so that presets, prompts and vocabularies must come from the installed package.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
PYTHON=${PYTHON:-python3}
"$PYTHON" -m venv "$tmp/venv"
pip() {  # quiet unless it fails
    "$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" > "$tmp/pip.log" 2>&1 \
        || { cat "$tmp/pip.log" >&2; echo "install_check: pip install $* failed" >&2; exit 1; }
}
pip "torch==2.13.0"                    # the CPU build on this project's machines; any torch in the range would do
pip "$repo"                            # a wheel built from the checkout: no editable link back to src/
pip --no-deps "clip-anytorch==2.6.0"   # CLIP's BPE vocabulary file (ClipTokenizer), as run.sh installs it
work="$tmp/elsewhere"
mkdir -p "$work"
cd "$work"
where=$("$tmp/venv/bin/python" -c "import ufinebench, pathlib; print(pathlib.Path(ufinebench.__file__).parent)")
case "$where" in "$repo"*) echo "install_check: ufinebench was imported from the checkout ($where), not the installed package" >&2; exit 1 ;; esac
"$tmp/venv/bin/ufinebench" demo --quick --out demo_quick > demo.log
grep -q "^report: " demo.log || { cat demo.log; echo "install_check: demo --quick printed no report line" >&2; exit 1; }
"$tmp/venv/bin/ufinebench" synth data/ufine_synth --identities 30 --size 256x96 --workers 1 > /dev/null
"$tmp/venv/bin/ufinebench" train --config synth-cpu-small --dry-run 2 --set data.workers=0 | tee dry.log
grep -q "^dry run of synth-cpu-small: 2 steps" dry.log
echo "install_check: installed package ran demo --quick and a preset dry run from $work"

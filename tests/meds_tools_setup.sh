#!/usr/bin/env bash
# The MEDS community tools (ACES, meds-torch-data, MEDS-DEV's configs) in their own venv:
# they need polars<2, the project polars 2.x. Prints the venv's python; tests/test_meds_aces.py
# and benchmarks/bench_loader.py find it through MEDS_TOOLS_PYTHON.
#   bash tests/meds_tools_setup.sh [VENV_DIR]   (default: .venv-meds in the repo root)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv-meds}
if [ ! -x "$venv/bin/aces-cli" ] || [ ! -x "$venv/bin/meds-dev-task" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    # the CPU wheel first: an unpinned torch (a dependency of meds-torch-data) pulls CUDA
    "$venv/bin/pip" install -q torch==2.13.0
    "$venv/bin/pip" install -q es-aces==0.7.3 meds-torch-data==0.9.0
    # only MEDS-DEV's published configs are used (read in place, unchanged); its pins
    # (es-aces==0.6.1, meds==0.3.3) would clash with the two tools above
    "$venv/bin/pip" install -q --no-deps meds-dev==0.0.14
fi
echo "$(pwd)/$venv/bin/python"

#!/usr/bin/env bash
# The GPU check in one command (docs/gpu.md): benchmarks/gpu_check.sh [benchmarks/gpu_check.py options]
#
# Runs this source tree (PYTHONPATH) with the machine's own python3 and PyTorch.  If a wheels/ folder sits at the
# root (benchmarks/gpu_wheels.sh fills it on a machine with internet; GENOFORMER_WHEELS names another), its
# wheels are first installed, offline, into .venv-gpu, a virtual environment that also sees the machine's torch;
# where python3 cannot make one (no venv module or ensurepip), into .gpu-deps, put first on PYTHONPATH.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
wheels="${GENOFORMER_WHEELS:-$root/wheels}"
path="$root"
if [ -d "$wheels" ]; then
    if [ ! -x .venv-gpu/bin/python ] && ! "$python" -m venv --system-site-packages .venv-gpu >/dev/null 2>&1; then
        rm -rf .venv-gpu
    fi
    if [ -x .venv-gpu/bin/python ]; then
        .venv-gpu/bin/python -m pip install --quiet --no-index --find-links "$wheels" "$wheels"/*.whl
        python=.venv-gpu/bin/python
    else
        "$python" -m pip install --quiet --no-index --find-links "$wheels" --upgrade --target .gpu-deps "$wheels"/*.whl
        path="$root:$root/.gpu-deps"
    fi
fi
export PYTHONPATH="$path${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" benchmarks/gpu_check.py "$@"

#!/usr/bin/env bash
# The GPU check in one command (docs/gpu.md): benchmarks/gpu_check.sh [benchmarks/gpu_check.py options]
#
# Runs this source tree (PYTHONPATH) with the machine's own python3 and PyTorch.  If a wheels/ folder sits at the
# root (benchmarks/gpu_wheels.sh fills it on a machine with internet; GENOFORMER_WHEELS names another), its
# wheels are first installed, offline, into .venv-gpu, a virtual environment that also sees the machine's torch.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
wheels="${GENOFORMER_WHEELS:-$root/wheels}"
if [ -d "$wheels" ]; then
    [ -x .venv-gpu/bin/python ] || "$python" -m venv --system-site-packages .venv-gpu
    .venv-gpu/bin/python -m pip install --quiet --no-index --find-links "$wheels" "$wheels"/*.whl
    python=.venv-gpu/bin/python
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" benchmarks/gpu_check.py "$@"

#!/usr/bin/env bash
# On a machine with internet: wheels/ with what benchmarks/gpu_check.sh needs on an offline GPU machine that has
# its own PyTorch: genoformer's dependencies (setup.cfg) but torch, and pytest and hypothesis, built for the GPU
# machine's Python and platform (default CPython 3.12, x86-64 Linux).
#     benchmarks/gpu_wheels.sh [python version, e.g. 3.12]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
version="${1:-3.12}"
mapfile -t requirements < <(python3 - <<'PY'
import configparser

setup = configparser.ConfigParser()
setup.read("setup.cfg")
listed = setup["options"]["install_requires"].split("\n") + setup["options.extras_require"]["test"].split("\n")
# torch is the GPU machine's own; plots and workflows are not part of the check
print("\n".join(r.strip() for r in listed if r.strip() and not r.strip().startswith(("torch", "matplotlib", "snakemake"))))
PY
)
python3 -m pip download --quiet --dest wheels --only-binary=:all: --implementation cp --python-version "$version" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    "${requirements[@]}"
du -sh wheels

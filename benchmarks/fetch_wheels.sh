#!/usr/bin/env bash
# Download into .whl/ the wheels the GPU benchmark machine lacks (Python 3.12, x86_64 Linux):
# faccent (the paper's library, benchmark-only) with the modules it imports, and Hydra for
# composing the `mti` config. Everything else the benchmarks import is on that machine.
# antlr4-python3-runtime 4.9.3 (omegaconf's pinned parser runtime) exists only as a source
# archive, so it is built here into a pure-Python wheel.
#
#   benchmarks/fetch_wheels.sh            (PYTHON=/path/to/python to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
mkdir -p .whl
"$PYTHON" -m pip download --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl \
  faccent==1.0.3 einops==0.8.2 kornia==0.4.1 decorator==5.3.1 imageio==2.38.1 \
  hydra-core==1.3.8 omegaconf==2.3.1
"$PYTHON" -m pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls -1 .whl

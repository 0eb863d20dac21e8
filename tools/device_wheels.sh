#!/usr/bin/env bash
# Download, into .whl/ (ignored by git), the wheels the lent GPU machine lacks for cryoweave and
# its CuPy tests: the device's image has Python 3.12, NumPy, SciPy, pandas, pyarrow, matplotlib,
# click, rich, PyYAML, pytest, hypothesis, CuPy, Numba and llvmlite (see
# /work/.library/device/KINDS.md; llvmlite's 60 MB wheel would not fit the 64 MiB carry), not
# these, nor cryoweave's own metadata. Versions are the ones this checkout's .venv has. Then
# tools/device_check.sh (carry .whl).
#
#     bash tools/device_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> "$(git rev-parse --git-common-dir)/info/exclude"
PIP=".venv/bin/python -m pip"
version() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf .whl && mkdir .whl
for name in mrcfile starfile SQLAlchemy greenlet alembic Mako pydantic pydantic_core \
            annotated-types typing-inspection starlette uvicorn anyio pytest-timeout; do
  $PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 --platform any -d .whl "$name==$(version "$name")"
done
# cryoweave itself, for its entry points (the built-in protocols); device_check.sh puts src/
# before it on the path, so the code that runs is the checkout's
.venv/bin/python -m pip wheel -q --no-deps -w .whl .
du -sh .whl && ls .whl

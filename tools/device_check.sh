#!/usr/bin/env bash
# The one prepared run on a lent GPU machine (device tool), from the repository root there:
# installs the carried wheels, records the card, runs every CuPy test (pytest -m gpu) and then
# benchmarks/gpu.py; logs and the benchmark section land in $OUT. Prepare here with
# `bash tools/device_wheels.sh`, then call the device tool's run with carry [".whl"] and
#     bash tools/device_check.sh            (at most about 9 minutes; timeout_s 590)
# Back here: python benchmarks/gpu.py --install <files_at>/gpu_section.md
set -uo pipefail
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
# src/ first: this checkout's code; /tmp/site: the wheels and cryoweave's entry points
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 CRYOWEAVE_DEVICE=gpu
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv \
  | tee "$OUT/card.txt"
python3 -c "import cupy; print('cupy', cupy.__version__, cupy.cuda.runtime.getDeviceCount(), 'GPU')" \
  | tee -a "$OUT/card.txt"
# the CuPy-parametrised engine tests and the protocol GPU/CPU agreement (test_device.py)
timeout 200 python3 -m pytest -q -m gpu -p no:cacheprovider --timeout 150 \
  tests/engine tests/protocols/test_device.py 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
echo "pytest exit: ${PIPESTATUS[0]}" | tee -a "$OUT/gpu_tests.log"
# the workloads in order until 300 s are spent (the rest are listed as not run)
timeout 330 python3 benchmarks/gpu.py --budget-s 300 --output "$OUT/gpu_section.md" 2>&1 \
  | tee "$OUT/gpu_bench.log" | tail -30

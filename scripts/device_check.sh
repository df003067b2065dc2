#!/usr/bin/env bash
# The GPU check: install the carried wheels, print the GPU and versions, run
# scripts/device_check.py (harvest, train and label throughput of a ~1B-parameter random Llama).
# Make the wheels here first: bash scripts/device_wheels.sh (writes .whl). Then run from the
# repository root on the device machine, with .whl carried:
#   bash scripts/device_check.sh                 (cuda, bfloat16; extra arguments go to the .py)
# WHEELS names the wheel folder (default .whl). Results: a table, and JSON in $OUT or runs/bench/.
set -o pipefail
WHEELS=${WHEELS:-.whl}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl && export PYTHONPATH=/tmp/site || exit
export PYTHONPATH="$PWD:$PYTHONPATH" PYTHONUNBUFFERED=1
nvidia-smi
python3 - <<'PY'
import importlib.metadata as m, platform, torch
names = ("torch", "transformers", "transformer-lens", "sae-lens", "h5py", "numpy", "wandb")
print("python", platform.python_version(), {n: m.version(n) for n in names})
print("cuda", torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())
PY
SECONDS=0
python3 scripts/device_check.py --device cuda --dtype bfloat16 "$@"
status=$?
echo "device_check.py exit $status after $SECONDS s"
exit $status

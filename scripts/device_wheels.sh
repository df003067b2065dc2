#!/usr/bin/env bash
# Download the wheels scripts/device_check.sh installs on the GPU machine (Python 3.12, x86-64,
# no network there): the packages our harvest/train/label imports need that its image lacks.
# Run here, from the repository root; the folder (.whl, git-ignored via .git/info/exclude, about
# 27 MB) then travels with the check (carry: .whl).
set -euo pipefail
DEST=${1:-.whl}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" \
    sae-lens==6.54.12 transformer-lens==3.9.0 wandb==0.31.0 datasets==5.2.0 dill==0.4.1 \
    multiprocess==0.70.19 simple-parsing==0.1.9 docstring-parser==0.18.0 better-abc==0.0.3 \
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    typing-extensions==4.16.0 platformdirs==4.14.8 protobuf==6.33.6 \
    googleapis-common-protos==1.76.0 opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 \
    opentelemetry-proto==1.45.2 opentelemetry-exporter-otlp-proto-common==1.45.2 \
    opentelemetry-exporter-otlp-proto-http==1.45.2 opentelemetry-semantic-conventions==0.66b2 \
    opentelemetry-exporter-otlp-common==0.66b2 opentelemetry-exporter-http-transport==0.66b2
ls "$DEST" | wc -l

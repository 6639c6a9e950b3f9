#!/usr/bin/env bash
# Fill .whl/ with the wheels the GPU machine lacks, for scripts/device_check.sh to install there.
#
#   bash scripts/build_device_wheels.sh        # from the repository root, with network (PyPI)
#
# The GPU image has Python 3.12 with JAX (CUDA), Flax, Optax, Orbax, NumPy, pandas, PyTorch and
# most of the scientific stack, but not TFDS, grain, pydantic and a few of their dependencies
# (the device README's package list). Those are fetched here as CPython 3.12 manylinux x86-64
# wheels, without dependencies (each one it needs is named below), at the versions pinned in
# constraints.txt; a package published only as source (promise) is built into a pure-Python
# wheel. .whl/ is git-ignored: never commit wheels. About 15 MB; the device tool carries it
# with the working tree (`carry: [".whl"]`).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
    tensorflow-datasets array_record dm-tree immutabledict promise simple-parsing
    docstring_parser tensorflow-metadata googleapis-common-protos termcolor toml
    importlib_resources grain portpicker pydantic pydantic_core annotated-types
    typing-inspection tensorboardX dp-accounting
)
python=${PYTHON:-python3}
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
    manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done

mkdir -p .whl
for name in "${PACKAGES[@]}"; do
    # The pinned version (constraints.txt spells names with - or _ and any case).
    pattern="^$(echo "$name" | sed 's/[-_]/[-_]/g')=="
    version=$(grep -iE "$pattern" constraints.txt | head -n 1 | cut -d= -f3)
    if [ -z "$version" ]; then
        echo "build_device_wheels.sh: $name is not pinned in constraints.txt" >&2
        exit 1
    fi
    if ! "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${platforms[@]}" -d .whl "$name==$version" 2>/dev/null; then
        "$python" -m pip wheel -q --no-deps -w .whl "$name==$version"
    fi
done
# Only pure-Python or CPython 3.12 x86-64 wheels may travel, one version of each.
for wheel in .whl/*.whl; do
    case "$wheel" in
        *-py3-none-any.whl | *-py2.py3-none-any.whl | *-cp312-*x86_64.whl | *-abi3-*x86_64.whl) ;;
        *) echo "build_device_wheels.sh: $wheel does not fit Python 3.12 on x86-64" >&2; exit 1 ;;
    esac
done
echo "$(ls .whl/*.whl | wc -l) wheels, $(du -sh .whl | cut -f1) in .whl/"

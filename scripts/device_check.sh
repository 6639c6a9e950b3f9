#!/usr/bin/env bash
# The GPU check: one prepared run, under 8 minutes, for a machine with one NVIDIA GPU and no
# network (JAX with CUDA, Flax, Optax, Orbax and PyTorch installed; jaxtrain's other
# dependencies carried as wheels in .whl/, made by scripts/build_device_wheels.sh).
#
#   bash scripts/device_check.sh                  # on the GPU machine, from the repository root
#   bash scripts/device_check.sh --dry-run        # anywhere: tiny sizes, no install, no tests
#   bash scripts/device_check.sh --torch-compile  # the PyTorch twins through torch.compile
#
# Stages (each under its own time limit, every stage runs even if one before failed):
#   1. install .whl/*.whl into /tmp/site (no index, no dependencies: the folder holds them all);
#   2. the tests that matter on this machine, at once: the mesh and parallel tests on 8 forced
#      CPU devices with this image's JAX, and the step, Transformer, one-step and mesh tests
#      with the GPU as the default device (float32 matmuls at full precision, as on the CPU);
#   3. scripts/device_bench.py: examples/s and MFU of the bfloat16 Transformer LM and a
#      CIFAR-shaped ResNet beside the same models in PyTorch, a 256-member vmapped sweep vs 256
#      sequential runs, one federated round of 1,000 clients.
# Writes $OUT/device_check.md (a BENCHMARKS.md section; OUT defaults to ./device_check) and
# the test logs beside it. Exit status: 0 when every stage passed.
# Environment: PYTHON (default python3), OUT, DEVICE_CHECK_PARTS (device_bench.py --parts),
# DEVICE_CHECK_LM (model sizes, see device_bench.py).
set -uo pipefail
cd "$(dirname "$0")/.."

dry=0
bench_flags=()
for arg in "$@"; do
    case "$arg" in
        --dry-run) dry=1; bench_flags+=(--dry-run) ;;
        --torch-compile) bench_flags+=(--torch-compile) ;;
        *) echo "device_check.sh: unknown argument '$arg' (--dry-run, --torch-compile)" >&2; exit 2 ;;
    esac
done
if [ -n "${DEVICE_CHECK_PARTS:-}" ]; then
    bench_flags+=(--parts "$DEVICE_CHECK_PARTS")
fi
python=${PYTHON:-python3}
out=${OUT:-device_check}
mkdir -p "$out"
started=$SECONDS
failed=()
stage() { echo "== $1 (at $((SECONDS - started)) s)"; }

# 1. wheels
if [ "$dry" = 0 ] && compgen -G ".whl/*.whl" > /dev/null; then
    stage "install $(ls .whl/*.whl | wc -l) wheels from .whl/"
    if ! "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl; then
        echo "device_check.sh: the wheels in .whl/ did not install" >&2
        exit 1
    fi
    export PYTHONPATH="/tmp/site:$PWD"
else
    [ "$dry" = 0 ] && echo "no .whl/ folder: using the packages installed"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

stage "environment"
nvidia-smi -L 2>/dev/null || echo "nvidia-smi: not found"
"$python" - <<'EOF' || failed+=(environment)
import jax, flax, optax, orbax.checkpoint as ocp, platform
print(f"python {platform.python_version()}; jax {jax.__version__} {jax.devices()}; "
      f"flax {flax.__version__}; optax {optax.__version__}; orbax {ocp.__version__}")
import jaxtrain.train  # every jaxtrain dependency importable
EOF

# 2. tests (skipped by --dry-run: the test suite is what runs the dry run)
if [ "$dry" = 0 ]; then
    stage "tests: 8 forced CPU devices and the GPU, side by side"
    JAX_PLATFORMS=cpu timeout 180 "$python" -m pytest -q -p no:cacheprovider -n 6 \
        --dist loadfile tests/test_mesh.py tests/test_parallel.py > "$out/tests_cpu.log" 2>&1 &
    cpu_tests=$!
    XLA_PYTHON_CLIENT_PREALLOCATE=false JAX_DEFAULT_MATMUL_PRECISION=highest timeout 180 \
        "$python" -m pytest -q -p no:cacheprovider -n 4 --dist loadfile tests/test_step.py \
        tests/test_transformer.py tests/test_one_step.py \
        tests/test_mesh.py::test_a_one_device_mesh_trains_like_plain_jit \
        > "$out/tests_gpu.log" 2>&1 &
    gpu_tests=$!
    wait "$cpu_tests" || failed+=(tests_cpu)
    wait "$gpu_tests" || failed+=(tests_gpu)
    for log in tests_cpu tests_gpu; do
        echo "-- $log: $(tail -n 1 "$out/$log.log")"
        grep -E "^(FAILED|ERROR)" "$out/$log.log" | head -20
    done
fi

# 3. measurements
stage "measurements"
# JAX takes GPU memory as it needs it (not 75% up front), so PyTorch's twins find room too.
XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 250 "$python" scripts/device_bench.py \
    "${bench_flags[@]}" --out "$out/device_check.md" || failed+=(measurements)

stage "done"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "device_check.sh: failed: ${failed[*]}" >&2
    exit 1
fi

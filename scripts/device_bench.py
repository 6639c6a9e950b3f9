"""The GPU check's measurements, written as a BENCHMARKS.md section.

Run by ``scripts/device_check.sh`` (on a machine with one NVIDIA GPU); ``--dry-run`` runs
every measurement at tiny sizes on whatever JAX finds (the CPU in the test suite), so the
script is known to work before a GPU is lent. ``--out FILE`` writes the Markdown section
there too, line by line (it is always printed). Sizes of the full run can be changed with
``DEVICE_CHECK_LM``, e.g. ``DEVICE_CHECK_LM=d_model=1024,layers=24,batch=16``.

1. **Transformer LM, bfloat16** (``jaxtrain.models.TransformerLM``, compute dtype bfloat16,
   float32 parameters and AdamW state; the toolkit's one ``make_train_step``) on random byte
   tokens, beside the same model in PyTorch (``scripts/device_torch.py``: bfloat16 autocast,
   flash attention, fused AdamW). Model FLOPs per token: ``6 (12 L d^2 + d V) + 12 L T d``
   (the weight matmuls forward and backward, and the attention scores and values); MFU is
   their rate over the chip's dense bfloat16 datasheet peak (``jaxtrain.cost``).
2. **CIFAR-shaped ResNet, bfloat16** (``jaxtrain.models.ResNet``, 32x32x3 random images, 10
   classes), beside its PyTorch twin; FLOPs: 3x the analytic forward count of its
   convolutions and head.
3. **Sweep**: ``members`` learning rates of the digits MLP as one vmapped ``jaxtrain sweep``
   (end to end: checkpoints, report) vs the same members as sequential single-member fused
   runs (one compiled ``lax.scan`` per epoch, reused; ``scripts/bench_sweep.py``).
4. **Federated**: one round of ``clients`` clients (digits, IID) as jaxtrain runs it (one
   vmapped program), vs a Python loop calling the jitted per-client ``local_train``.

The closing lines are ``key: value`` pairs (``lm_mfu``, ``lm_vs_pytorch``, ...).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from jaxtrain.config import AdamWConfig, load_config  # noqa: E402
from jaxtrain.cost.devices import device_peak_flops  # noqa: E402
from jaxtrain.cost.flops import conv_flops, dense_flops  # noqa: E402
from jaxtrain.models.resnet import ResNet  # noqa: E402
from jaxtrain.models.transformer import TransformerLM  # noqa: E402
from jaxtrain.train.optim import build_optimizer  # noqa: E402
from jaxtrain.train.state import count_params, create_train_state  # noqa: E402
from jaxtrain.train.step import make_train_step  # noqa: E402
from jaxtrain.train.tasks import classification, language_model  # noqa: E402

VOCAB = 256
PARTS = ("lm", "resnet", "sweep", "federated")
SIZES = {
    "full": {
        "lm": {"d_model": 1536, "heads": 12, "layers": 12, "seq": 1024, "batch": 32, "steps": 10},
        "resnet": {"stages": (2, 2, 2, 2), "features": (64, 128, 256, 512), "batch": 512,
                   "steps": 20},
        "sweep": {"members": 256, "epochs": 5, "width": 256},
        "federated": {"clients": 1000},
    },
    "dry": {
        "lm": {"d_model": 32, "heads": 4, "layers": 1, "seq": 16, "batch": 4, "steps": 2},
        "resnet": {"stages": (1,), "features": (8,), "batch": 4, "steps": 2},
        "sweep": {"members": 3, "epochs": 1, "width": 8},
        "federated": {"clients": 10},
    },
}  # fmt: skip


def _timed_steps(step, state, batch, steps: int) -> float:
    """Seconds per call of the jitted ``step(state, batch)`` after two warm-up calls."""
    for _ in range(2):
        state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    started = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    return (time.perf_counter() - started) / steps


def _peak_memory_gb() -> float | None:
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**30


def _torch_device():
    """(torch, device) or (None, reason) when PyTorch cannot run here."""
    try:
        import torch
    except ImportError:
        return None, "PyTorch is not installed"
    if jax.default_backend() == "gpu" and not torch.cuda.is_available():
        return None, "PyTorch sees no GPU"
    return torch, torch.device("cuda" if torch.cuda.is_available() else "cpu")


# -- 1. Transformer LM -------------------------------------------------------------------


def lm_flops_per_step(s: dict) -> float:
    d, layers, seq = s["d_model"], s["layers"], s["seq"]
    per_token = 6 * (12 * layers * d * d + d * VOCAB) + 12 * layers * seq * d
    return float(per_token * seq * s["batch"])


def lm_jaxtrain(s: dict) -> dict:
    model = TransformerLM(
        vocab_size=VOCAB,
        d_model=s["d_model"],
        num_heads=s["heads"],
        num_layers=s["layers"],
        max_len=s["seq"],
        dtype=jnp.bfloat16,
    )
    tx = build_optimizer(AdamWConfig(learning_rate=3e-4), 10_000)
    state = create_train_state(model, tx, (s["seq"],), 0, jnp.int32)
    step = jax.jit(make_train_step(model, tx, language_model(VOCAB)), donate_argnums=0)
    tokens = jax.random.randint(jax.random.key(1), (s["batch"], s["seq"] + 1), 0, VOCAB)
    batch = {"inputs": tokens[:, :-1], "labels": tokens[:, 1:]}
    seconds = _timed_steps(step, state, batch, s["steps"])
    return {"step_s": seconds, "params": count_params(state.params), "memory": _peak_memory_gb()}


def lm_pytorch(s: dict, compile: bool) -> dict | str:
    torch, device = _torch_device()
    if torch is None:
        return device
    from device_torch import TransformerLM as TorchLM
    from device_torch import time_training

    torch.manual_seed(0)
    model = TorchLM(VOCAB, s["d_model"], s["heads"], s["layers"], s["seq"])
    tokens = torch.randint(0, VOCAB, (s["batch"], s["seq"] + 1), device=device)
    seconds = time_training(model, tokens[:, :-1], tokens[:, 1:], s["steps"], compile=compile)
    params = sum(p.numel() for p in model.parameters())
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()  # JAX's parts after this one need the memory back
    return {"step_s": seconds, "params": params}


# -- 2. ResNet -----------------------------------------------------------------------------


def resnet_flops_per_step(s: dict) -> float:
    """3x the forward count of the convolutions and the head (32x32 inputs, 3 channels)."""
    batch, size, c_in = s["batch"], 32, 3
    total = conv_flops(batch, (size, size), c_in, s["features"][0], (3, 3), bias=False)
    c_in = s["features"][0]
    for stage, (count, width) in enumerate(zip(s["stages"], s["features"], strict=True)):
        for block in range(count):
            stride = 2 if stage > 0 and block == 0 else 1
            size = -(-size // stride)
            total += conv_flops(batch, (size, size), c_in, width, (3, 3), bias=False)
            total += conv_flops(batch, (size, size), width, width, (3, 3), bias=False)
            if stride != 1 or c_in != width:
                total += conv_flops(batch, (size, size), c_in, width, (1, 1), bias=False)
            c_in = width
    return 3.0 * (total + dense_flops(batch, c_in, 10))


def resnet_jaxtrain(s: dict) -> dict:
    model = ResNet(s["stages"], s["features"], num_classes=10, dtype=jnp.bfloat16)
    tx = build_optimizer(AdamWConfig(learning_rate=3e-4), 10_000)
    state = create_train_state(model, tx, (32, 32, 3), 0)
    step = jax.jit(make_train_step(model, tx, classification(10)), donate_argnums=0)
    keys = jax.random.split(jax.random.key(2))
    batch = {
        "inputs": jax.random.normal(keys[0], (s["batch"], 32, 32, 3)),
        "labels": jax.random.randint(keys[1], (s["batch"],), 0, 10),
    }
    seconds = _timed_steps(step, state, batch, s["steps"])
    return {"step_s": seconds, "params": count_params(state.params)}


def resnet_pytorch(s: dict, compile: bool) -> dict | str:
    torch, device = _torch_device()
    if torch is None:
        return device
    from device_torch import ResNet as TorchResNet
    from device_torch import time_training

    torch.manual_seed(0)
    model = TorchResNet(s["stages"], s["features"], 10)
    images = torch.randn(s["batch"], 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (s["batch"],), device=device)
    seconds = time_training(model, images, labels, s["steps"], compile=compile, channels_last=True)
    params = sum(p.numel() for p in model.parameters())
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()  # JAX's parts after this one need the memory back
    return {"step_s": seconds, "params": params}


# -- 3. sweep, 4. federated --------------------------------------------------------------


def sweep(s: dict) -> dict:
    import bench_sweep

    bench_sweep.EPOCHS = s["epochs"]
    rates = bench_sweep.learning_rates(s["members"])
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        path = bench_sweep.write_config(folder, s["width"])
        vmapped_s, _ = bench_sweep.vmapped(path, folder, rates)
        sequential_s = bench_sweep.fused(path, rates)
    return {"vmapped_s": vmapped_s, "sequential_s": sequential_s}


def federated(s: dict) -> dict:
    from jaxtrain.data import prepare_data
    from jaxtrain.federated import Client, build_federated, make_local_train
    from jaxtrain.train.pieces import build_step

    n = s["clients"]
    config = load_config(
        ROOT / "configs" / "digits_federated.yaml",
        ["federated.partition=iid", f"federated.num_clients={n}",
         f"federated.clients_per_round={n}", "federated.local_epochs=1"],
    )  # fmt: skip
    pieces = build_federated(config, prepare_data(config.data))
    clients, server = pieces.clients, pieces.server

    def median_call(fn, calls: int = 5) -> float:
        jax.block_until_ready(fn())
        spent = []
        for _ in range(calls):
            started = time.perf_counter()
            jax.block_until_ready(fn())
            spent.append(time.perf_counter() - started)
        return statistics.median(spent)

    round_s = median_call(lambda: pieces.run_round(server, clients)[0].params)
    local_train = jax.jit(
        make_local_train(
            functools.partial(build_step, config, pieces.pieces),
            pieces.pieces.tx,
            padded_size=clients.inputs.shape[1],
            batch_size=config.data.batch_size,
            local_epochs=1,
        )
    )
    each = [Client(clients.inputs[k], clients.labels[k], clients.sizes[k]) for k in range(n)]
    keys = [jax.random.key(k) for k in range(n)]

    def loop():
        return [local_train(server.params, server.model_state, each[k], keys[k]).params
                for k in range(n)]  # fmt: skip

    return {"round_s": round_s, "loop_s": median_call(loop, calls=2), "clients": n}


# -- report ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, any device")
    parser.add_argument("--out", type=Path, help="also write the Markdown section here")
    parser.add_argument("--torch-compile", action="store_true", help="torch.compile the twins")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}"
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if not parts <= set(PARTS):
        parser.error(f"--parts: unknown {sorted(parts - set(PARTS))}; choose from {PARTS}")
    sizes = SIZES["dry" if args.dry_run else "full"]
    for item in filter(None, os.environ.get("DEVICE_CHECK_LM", "").split(",")):
        key, _, value = item.partition("=")
        sizes["lm"][key] = int(value)
    device = jax.devices()[0]
    peak, source = device_peak_flops(device, jnp.bfloat16)
    if args.out is not None:
        args.out.write_text("")

    def out(line: str = "") -> None:
        """Print ``line`` and append it to ``--out`` at once (a run stopped by its time
        limit keeps what it measured)."""
        print(line, flush=True)
        if args.out is not None:
            with args.out.open("a") as file:
                file.write(line + "\n")

    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "not installed"
    compiled = "torch.compile" if args.torch_compile else "eager"
    out(f"## GPU check: `scripts/device_check.sh` ({datetime.date.today().isoformat()})")
    out()
    out(f"Command: `bash scripts/device_check.sh{' --dry-run' if args.dry_run else ''}`; "
        f"{device.device_kind} ({jax.default_backend()}), JAX {jax.__version__}, PyTorch "
        f"{torch_version} ({compiled}), Python {platform.python_version()}; peak bfloat16 "
        f"{peak / 1e12:.1f} TFLOP/s ({source}).")  # fmt: skip
    out()
    out("```")
    out(f"{'model':16}{'framework':10}{'batch':>6}{'ex/s':>11}{'step ms':>10}{'TFLOP/s':>9}"
        f"{'MFU':>7}")  # fmt: skip
    results: dict[str, float] = {}

    def row(model: str, framework: str, s: dict, flops: float, measured) -> None:
        if isinstance(measured, str):
            out(f"{model:16}{framework:10}{s['batch']:6}  skipped: {measured}")
            return
        twin = results.setdefault(f"{model}_params", measured["params"])
        if measured["params"] != twin:  # the twins must be the same model
            out(f"{model:16}{framework:10}  NOT THE SAME MODEL: {measured['params']:,} "
                f"parameters, jaxtrain's has {twin:,}")  # fmt: skip
        step_s = measured["step_s"]
        rate = flops / step_s
        out(f"{model:16}{framework:10}{s['batch']:6}{s['batch'] / step_s:11,.1f}"
            f"{step_s * 1e3:10.2f}{rate / 1e12:9.2f}{rate / peak:7.1%}")  # fmt: skip
        results[f"{model}_{framework}_ex_s"] = s["batch"] / step_s
        results[f"{model}_{framework}_mfu"] = rate / peak

    def phase(name: str, fn, *fn_args):
        """``fn(*fn_args)``, its wall time on stderr (the check's budget is 8 minutes)."""
        started = time.perf_counter()
        result = fn(*fn_args)
        print(f"[{name}: {time.perf_counter() - started:.1f} s]", file=sys.stderr, flush=True)
        return result

    lm, lm_flops = sizes["lm"], lm_flops_per_step(sizes["lm"])
    resnet, resnet_flops = sizes["resnet"], resnet_flops_per_step(sizes["resnet"])
    notes = []
    if "lm" in parts:
        measured = phase("lm jaxtrain", lm_jaxtrain, lm)
        row("transformer_lm", "jaxtrain", lm, lm_flops, measured)
        torch_lm = phase("lm pytorch", lm_pytorch, lm, args.torch_compile)
        row("transformer_lm", "pytorch", lm, lm_flops, torch_lm)
        memory = measured["memory"]
        notes.append(
            f"transformer_lm: d_model {lm['d_model']}, {lm['heads']} heads, {lm['layers']} "
            f"layers, sequence {lm['seq']}, {measured['params'] / 1e6:.1f}M parameters, "
            f"{lm_flops / 1e12:.2f} TFLOP per step; peak device memory "
            + (f"{memory:.1f} GiB" if memory is not None else "not reported")
        )
    if "resnet" in parts:
        measured = phase("resnet jaxtrain", resnet_jaxtrain, resnet)
        row("resnet_cifar", "jaxtrain", resnet, resnet_flops, measured)
        torch_resnet = phase("resnet pytorch", resnet_pytorch, resnet, args.torch_compile)
        row("resnet_cifar", "pytorch", resnet, resnet_flops, torch_resnet)
        notes.append(
            f"resnet_cifar: stages {list(resnet['stages'])}, features "
            f"{list(resnet['features'])}, {resnet_flops / 1e9:.1f} GFLOP per step"
        )
    for note in notes:
        out(note)
    if "sweep" in parts:
        swept = phase("sweep", sweep, sizes["sweep"])
        members = sizes["sweep"]["members"]
        out(f"sweep: {members} members vmapped (jaxtrain sweep, end to end) "
            f"{swept['vmapped_s']:.1f} s; {members} sequential fused runs "
            f"{swept['sequential_s']:.1f} s")  # fmt: skip
        results["sweep_vs_sequential"] = swept["sequential_s"] / swept["vmapped_s"]
    if "federated" in parts:
        rounds = phase("federated", federated, sizes["federated"])
        out(f"federated: one round of {rounds['clients']} clients "
            f"{rounds['round_s'] * 1e3:.1f} ms (vmapped); loop over clients calling local_train "
            f"{rounds['loop_s'] * 1e3:.1f} ms")  # fmt: skip
        results["round_vs_client_loop"] = rounds["loop_s"] / rounds["round_s"]
    if "transformer_lm_jaxtrain_mfu" in results:
        out(f"lm_mfu: {results['transformer_lm_jaxtrain_mfu']:.3f}")
    for model in ("transformer_lm", "resnet_cifar"):
        torch_rate = results.get(f"{model}_pytorch_ex_s")
        if torch_rate:
            ratio = results[f"{model}_jaxtrain_ex_s"] / torch_rate
            out(f"{model.split('_')[0].replace('transformer', 'lm')}_vs_pytorch: {ratio:.2f}")
    for key in ("sweep_vs_sequential", "round_vs_client_loop"):
        if key in results:
            out(f"{key}: {results[key]:.2f}")
    out("```")


if __name__ == "__main__":
    main()

"""Published weights from outside: ``.safetensors`` or numpy ``.npz`` (never pickle).

A file's entries are renamed into the model's parameter paths by a mapping ``{entry:
path}`` (``transfer.names``); an entry may be named ``collection:path`` for a variable
outside ``params`` (``batch_stats:BatchNorm_0/mean``). Layouts differ between frameworks:
a PyTorch ``Linear.weight`` is ``[out, in]`` where a Flax ``Dense`` kernel is ``[in, out]``,
so transpose such arrays when writing the file (the shape check names any that do not fit).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from jaxtrain.transfer.errors import TransferError

WEIGHT_SUFFIXES = (".safetensors", ".npz")


def read_weights_file(path: str | Path, names: Mapping[str, str]) -> dict[str, np.ndarray]:
    """``{parameter path: array}`` for every entry ``names`` maps; other entries are left out.

    Raises ValueError (one line naming the file and the entry) for an unreadable file or a
    mapped entry the file does not have.
    """
    path = Path(path)
    entries = _read(path)
    absent = [entry for entry in names if entry not in entries]
    if absent:
        have = ", ".join(sorted(entries)[:5])
        raise TransferError(
            f"transfer.names: {absent[0]!r} is not an entry of {path} (it has {have}"
            f"{', ...' if len(entries) > 5 else ''})"
        )
    renamed = {}
    for entry, target in names.items():
        if target in renamed:
            raise TransferError(f"transfer.names: two entries map to {target!r}")
        renamed[target] = entries[entry]
    return renamed


def write_weights_file(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``{name: array}`` as ``.safetensors`` or ``.npz`` (by the suffix of ``path``)."""
    path = Path(path)
    arrays = {name: np.ascontiguousarray(np.asarray(a)) for name, a in arrays.items()}
    if path.suffix.lower() == ".safetensors":
        from safetensors.numpy import save_file

        save_file(arrays, str(path))
    elif path.suffix.lower() == ".npz":
        np.savez(path, **arrays)
    else:
        raise ValueError(f"{path}: weights are written as .safetensors or .npz")
    return path


def _read(path: Path) -> dict[str, np.ndarray]:
    """Every entry of the file; ``allow_pickle=False``, so object arrays are refused."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.numpy import load_file

            return dict(load_file(str(path)))
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except Exception as err:  # noqa: BLE001 - zip, numpy and safetensors errors alike
        message = " ".join(str(err).split())[:200]
        raise TransferError(
            f"transfer.init_from: {path} is not a readable weights file ({message})"
        ) from None

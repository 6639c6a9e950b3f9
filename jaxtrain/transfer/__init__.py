"""Transfer learning: pretrained weights into a new model (matched by path, with a report),
what trains (freezing, head-only, gradual unfreezing, layer-wise learning-rate decay),
LoRA adapters and their merge, and weights imported from ``.safetensors``/``.npz`` files.
See docs/transfer.md."""

from jaxtrain.transfer.errors import TransferError
from jaxtrain.transfer.load import TransferReport, load_pretrained, match, read_source
from jaxtrain.transfer.lora import LoRAModel, add_adapters, merge
from jaxtrain.transfer.plan import TransferPlan, creation_order
from jaxtrain.transfer.setup import (
    Transfer,
    build_transfer,
    check_transfer,
    write_transfer_report,
)
from jaxtrain.transfer.weights_file import read_weights_file, write_weights_file

merge_lora = merge  # the name the top-level package exports

__all__ = [
    "LoRAModel",
    "Transfer",
    "TransferError",
    "TransferPlan",
    "TransferReport",
    "add_adapters",
    "build_transfer",
    "check_transfer",
    "creation_order",
    "load_pretrained",
    "match",
    "merge",
    "merge_lora",
    "read_source",
    "read_weights_file",
    "write_transfer_report",
    "write_weights_file",
]

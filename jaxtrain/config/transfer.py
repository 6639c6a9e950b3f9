"""Transfer learning (``transfer:``): start from pretrained weights, choose what trains.

Parameters are named by their path in the model's parameter tree, ``/``-separated, e.g.
``Dense_1/kernel`` (CNN head) or ``block_0/attn/qkv/kernel`` (Transformer LM); patterns are
shell-style globs over those paths (``*`` matches across ``/``), and a pattern that names a
module (``Dense_1``) also covers everything below it. See docs/transfer.md.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass

from jaxtrain.config.base import STRICT, Epochs, FiniteFloat, NonNegativeInt, PositiveFloat, Width

Pattern = Annotated[str, Field(min_length=1)]


@dataclass(config=STRICT)
class LoRAConfig:
    """Low-rank adapters (Hu et al., 2021): each kernel matching ``targets`` is used as
    ``kernel + (alpha / rank) * lora_a @ lora_b`` with ``lora_a: [in, rank]`` (random) and
    ``lora_b: [rank, out]`` (zeros, so training starts from the pretrained function). Only
    the adapters (and the ``head``, if any) train; the base weights stay frozen."""

    rank: Width = 4
    alpha: PositiveFloat = 8.0
    targets: tuple[Pattern, ...] = ("*/attn/qkv/kernel", "*/attn/out/kernel")


@dataclass(config=STRICT)
class UnfreezeConfig:
    """Gradual unfreezing (ULMFiT): the run starts training only what ``train`` says; every
    ``epochs_per_stage`` epochs the next top-level module below the head starts training too,
    from the top of the network down."""

    epochs_per_stage: Epochs = 1


@dataclass(config=STRICT)
class TransferConfig:
    """Initialise from pretrained weights and choose what trains.

    ``init_from`` (the issue's ``transfer.from``): a run directory (its ``step`` checkpoint:
    ``best`` by the run's validation metric, ``latest``, or a step number), one checkpoint
    folder ``RUN/checkpoints/<step>``, or a ``.safetensors``/``.npz`` weights file whose
    entries are renamed into the model by ``names`` (``{file entry: parameter path}``;
    entries not named are dropped). Parameters are matched by path: what the checkpoint
    and the model share is loaded, ``head`` parameters (and any the checkpoint lacks) are
    newly initialised, checkpoint parameters the model lacks are dropped; a shape mismatch
    outside ``head`` is an error naming the parameter.

    ``train``: ``all`` (full fine-tune), ``head`` (only ``head`` trains) or ``adapters``
    (needs ``lora``: only the adapters and the head train). ``freeze`` adds patterns that
    never train. Frozen parameters get no gradient and no optimizer state and end
    bitwise equal to the loaded values. ``unfreeze`` makes ``train: head`` gradual.
    ``layer_decay`` (LLRD) multiplies the learning rate of the k-th top-level module below
    the head by ``layer_decay ** k``. ``normalizer``: ``source`` normalises the inputs with
    the statistics the pretrained run was trained with (its ``data_stats.json``), so the
    pretrained weights see inputs on the scale they learned; ``refit`` fits them on the new
    training split (weights files always refit).
    """

    init_from: Annotated[str, Field(min_length=1)]
    step: Literal["best", "latest"] | NonNegativeInt = "best"
    names: dict[str, str] | None = None
    head: tuple[Pattern, ...] = ()
    train: Literal["all", "head", "adapters"] = "all"
    freeze: tuple[Pattern, ...] = ()
    unfreeze: UnfreezeConfig | None = None
    layer_decay: Annotated[FiniteFloat, Field(gt=0, le=1)] | None = None
    lora: LoRAConfig | None = None
    normalizer: Literal["source", "refit"] = "source"

    @model_validator(mode="after")
    def _consistent(self) -> TransferConfig:
        weights_file = self.init_from.lower().endswith((".safetensors", ".npz"))
        if self.names is not None and not weights_file:
            raise ValueError("names: only used when init_from is a .safetensors or .npz file")
        if weights_file and not self.names:
            raise ValueError(
                "names: required with a weights file: map each file entry to a parameter "
                "path, e.g. {conv1.weight: Conv_0/kernel}"
            )
        if self.train == "head" and not self.head:
            raise ValueError("train: 'head' needs transfer.head (the patterns of the head)")
        if self.train == "adapters" and self.lora is None:
            raise ValueError("train: 'adapters' needs a transfer.lora section")
        if self.lora is not None and self.train != "adapters":
            raise ValueError("lora: adapters train alone; set transfer.train=adapters")
        if self.unfreeze is not None and self.train != "head":
            raise ValueError("unfreeze: gradual unfreezing starts from train: head")
        return self

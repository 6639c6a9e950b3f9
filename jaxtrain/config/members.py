"""A sweep member's raw config: the base config with the member's settings applied.

Most settings are plain overrides. A setting of a section's kind (``optimizer.name: sgd`` on
an AdamW base, ``model.name``) switches the section to that kind: the keys both kinds have
(``learning_rate``, ``weight_decay``, ``schedule``, ...) keep the base's values, the keys only
the old kind has (``b1``, ``b2``, ``eps``) are dropped, and the new kind's own keys take their
defaults unless the member sets them (``optimizer.momentum`` under ``when: {optimizer.name:
sgd}``).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from jaxtrain.config.load import apply_overrides
from jaxtrain.config.schema import ModelConfig, OptimizerConfig

_KINDS = {"optimizer": OptimizerConfig, "model": ModelConfig}


def _kind_fields(union: Any) -> dict[str, set[str]]:
    """``{kind name: its field names}`` for a discriminated union of config dataclasses."""
    classes = typing.get_args(typing.get_args(union)[0])
    return {
        cls.__dataclass_fields__["name"].default: {f.name for f in dataclasses.fields(cls)}
        for cls in classes
    }


KIND_FIELDS = {section: _kind_fields(union) for section, union in _KINDS.items()}


def member_raw(base: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` (a plain config mapping) with ``settings`` (dotted key -> value) applied; a
    ``<section>.name`` setting of another kind first drops the keys that kind lacks."""
    raw = dict(base)
    for section, kinds in KIND_FIELDS.items():
        kind = settings.get(f"{section}.name")
        current = raw.get(section)
        if kind is None or kind not in kinds or not isinstance(current, Mapping):
            continue
        if current.get("name") != kind:
            raw[section] = {k: v for k, v in current.items() if k in kinds[kind]}
    return apply_overrides(raw, settings)

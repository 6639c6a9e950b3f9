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
from collections.abc import Mapping
from typing import Any

from jaxtrain import registry
from jaxtrain.config.load import apply_overrides
from jaxtrain.config.schema import BUILTIN_MODELS, BUILTIN_OPTIMIZERS

_BUILTINS = {"optimizer": BUILTIN_OPTIMIZERS, "model": BUILTIN_MODELS}

KIND_FIELDS = {
    section: {name: {f.name for f in dataclasses.fields(cls)} for name, cls in classes.items()}
    for section, classes in _BUILTINS.items()
}


def kind_fields(section: str, kind: str) -> set[str] | None:
    """The field names of ``kind`` in ``section`` (``model``, ``optimizer``): a built-in's, or
    a registered family's (name included); None when ``kind`` names nothing."""
    if kind in KIND_FIELDS[section]:
        return KIND_FIELDS[section][kind]
    try:
        family = registry.find(section, kind)
    except registry.RegistryError:
        return None
    return None if family is None else {"name", *family.keys}


def member_raw(base: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` (a plain config mapping) with ``settings`` (dotted key -> value) applied; a
    ``<section>.name`` setting of another kind first drops the keys that kind lacks."""
    raw = dict(base)
    for section in KIND_FIELDS:
        kind = settings.get(f"{section}.name")
        current = raw.get(section)
        if not isinstance(kind, str) or not isinstance(current, Mapping):
            continue
        fields = kind_fields(section, kind)
        if fields is not None and current.get("name") != kind:
            raw[section] = {k: v for k, v in current.items() if k in fields}
    return apply_overrides(raw, settings)

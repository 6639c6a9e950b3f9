"""One protocol over Flax linen and Flax NNX modules, so the train step stays one pure function.

A model is anything with ``init(key, inputs) -> (params, model_state)`` and ``apply(params,
model_state, inputs, *, train, rng) -> (outputs, model_state)``, both pure: params and
model_state are pytrees of arrays (nested dicts), ``rng`` a typed key for dropout (or None).
:func:`as_model` makes one from a linen module (``init``/``apply`` as Flax defines them) or an
NNX module (split into a static graph and its state with ``nnx.split``; the state goes in and
out of ``apply``, the graph never changes). The train state, the step, checkpoints and sweeps
see only the arrays, so both kinds train, resume and vmap the same way.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp


class Model(Protocol):
    """What the step needs from a model (see the module docstring)."""

    def init(self, key: jax.Array, inputs: jax.Array) -> tuple[Any, Any]: ...

    def apply(
        self, params: Any, model_state: Any, inputs: jax.Array, *, train: bool, rng=None
    ) -> tuple[Any, Any]: ...


def as_model(model: Any) -> Model:
    """``model`` as a :class:`Model`: an NNX module is wrapped by :class:`NNXModel` (its current
    state is the initial state), a linen module (or an object with linen's ``apply`` and
    ``init``, such as transfer learning's wrappers) by :class:`LinenModel`; a :class:`LinenModel` or
    :class:`NNXModel` is returned as it is."""
    if isinstance(model, LinenModel | NNXModel):
        return model
    if is_nnx(model):
        return NNXModel.from_module(model)
    if callable(getattr(model, "apply", None)):
        return LinenModel(model)  # a linen module, or an object that applies like one
    raise TypeError(
        f"expected a Flax module (linen or NNX), got {type(model).__name__}; wrap other "
        "models in a Flax module"
    )


def is_nnx(model: Any) -> bool:
    """Whether ``model`` is an NNX module instance."""
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and isinstance(model, nnx.Module)


@functools.cache
def _mode_argument(call: Callable) -> str | None:
    """How a module's ``__call__`` is told train from eval: ``train`` (jaxtrain's, True when
    training), ``deterministic`` (Flax examples', False when training), or not at all."""
    try:
        parameters = inspect.signature(call).parameters
    except (TypeError, ValueError):
        return None
    for name in ("train", "deterministic"):
        if name in parameters:
            return name
    return None


def _call_of(obj: Any) -> Callable | None:
    """The ``__call__`` that ``obj``'s class defines (not the metaclass's), or None."""
    for owner in type(obj).__mro__:
        if owner is not object and "__call__" in vars(owner):
            return vars(owner)["__call__"]
    return None


def _mode(call: Callable | None, train: bool) -> dict[str, bool]:
    argument = None if call is None else _mode_argument(call)
    if argument == "train":
        return {"train": train}
    if argument == "deterministic":
        return {"deterministic": not train}
    return {}


class LinenModel:
    """A Flax linen module: ``params`` is its ``params`` collection, ``model_state`` the other
    collections (``batch_stats`` ...), updated only when training; dropout draws from the
    ``dropout`` stream. Called with ``train=`` (or ``deterministic=``) when ``__call__`` takes
    it. ``variables`` (``{"params": ..., other collections}``): the initial variables, instead
    of ``module.init`` from the key."""

    def __init__(self, module: Any, variables: Any = None):
        self.module = module
        self.variables = variables  # given initial variables (params and any collections)
        inner = module
        while _call_of(inner) is None and hasattr(inner, "base"):
            inner = inner.base  # a wrapper (transfer's): the wrapped module says the mode
        self._call = _call_of(inner)

    def init(self, key: jax.Array, inputs: jax.Array) -> tuple[Any, Any]:
        if self.variables is not None:
            variables = dict(self.variables)
            return variables.pop("params"), variables
        mode = _mode(self._call, False)
        variables = dict(self.module.init({"params": key}, inputs, **mode))
        params = variables.pop("params", {})
        return params, variables

    def apply(self, params, model_state, inputs, *, train: bool, rng=None):
        variables = {"params": params, **model_state}
        rngs = {"dropout": rng} if rng is not None else None
        mode = _mode(self._call, train)
        if train and model_state:
            outputs, updates = self.module.apply(
                variables, inputs, rngs=rngs, mutable=list(model_state), **mode
            )
            return outputs, dict(updates)
        return self.module.apply(variables, inputs, rngs=rngs, **mode), model_state


class NNXModel:
    """A Flax NNX module as pure functions: ``nnx.split(module, nnx.Param, nnx.RngState,
    ...)`` gives the graph (static), ``params`` (every ``nnx.Param``), the random streams and
    ``model_state`` (everything else, e.g. BatchNorm statistics); all as nested dicts.

    ``apply`` merges them into a fresh module, sets it to ``train()``/``eval()`` mode, reseeds
    every random stream from ``rng`` (so dropout draws from the step's key, the same in a
    resumed run) and calls it; in training the new ``model_state`` is split off again.

    Made :meth:`from_module` (an instance: its parameters are the initial ones, whatever the
    seed) or :meth:`from_factory` (``factory(rngs) -> module``: each seed initialises its own
    parameters, inside ``jit``/``vmap``)."""

    def __init__(self, graphdef, templates, initial=None, factory=None):
        self.graphdef = graphdef
        self.templates = templates  # (params, rngs, rest) States: shapes for merging
        self.initial = initial  # (params, model_state) of an instance
        self.factory = factory

    @classmethod
    def from_module(cls, module: Any) -> NNXModel:
        from flax import nnx

        graphdef, params, rngs, rest = nnx.split(module, nnx.Param, nnx.RngState, ...)
        shapes = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), (params, rngs, rest)
        )
        return cls(graphdef, shapes, (_pure(params), _pure(rest)))

    @classmethod
    def from_factory(cls, factory: Callable[[Any], Any]) -> NNXModel:
        from flax import nnx

        abstract = nnx.eval_shape(lambda: factory(nnx.Rngs(0)))
        graphdef, params, rngs, rest = nnx.split(abstract, nnx.Param, nnx.RngState, ...)
        return cls(graphdef, (params, rngs, rest), factory=factory)

    def init(self, key: jax.Array, inputs: jax.Array) -> tuple[Any, Any]:
        if self.factory is None:
            return self.initial
        from flax import nnx

        module = self.factory(nnx.Rngs(key))
        _, params, _, rest = nnx.split(module, nnx.Param, nnx.RngState, ...)
        return _pure(params), _pure(rest)

    def apply(self, params, model_state, inputs, *, train: bool, rng=None):
        from flax import nnx

        params_template, rngs_template, rest_template = self.templates
        module = nnx.merge(
            self.graphdef,
            _filled(params_template, params),
            _reseeded(rngs_template, rng),
            _filled(rest_template, model_state),
        )
        if train:
            module.train()
        else:
            module.eval()
        outputs = module(inputs, **_mode(_call_of(module), train))
        if not train:
            return outputs, model_state
        _, _, _, rest = nnx.split(module, nnx.Param, nnx.RngState, ...)
        return outputs, _pure(rest)


def _pure(state) -> dict:
    """An NNX State as a nested dict of arrays with text keys (Orbax-friendly)."""
    from flax import nnx

    return _text_keys(nnx.to_pure_dict(state))


def _text_keys(tree):
    if isinstance(tree, dict):
        return {str(k): _text_keys(v) for k, v in tree.items()}
    return tree


def _filled(template, values: dict):
    """A fresh copy of the State ``template`` holding ``values`` (a dict from :func:`_pure`)."""
    from flax import nnx

    state = jax.tree.map(lambda leaf: leaf, template)  # new Variables in the current trace
    if values:
        nnx.replace_by_pure_dict(state, values)
    return state


def _reseeded(template, rng):
    """The random streams of ``template`` (a State of RngKey/RngCount variables) with fresh
    keys folded from ``rng`` (key 0 without one) and counts at zero."""
    base = jax.random.key(0) if rng is None else rng
    counter = iter(range(1 << 30))

    def fresh(leaf):
        shape, dtype = tuple(leaf.shape), leaf.dtype
        if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
            key = jax.random.fold_in(base, next(counter))
            return key if shape == () else jax.random.split(key, shape)
        return jnp.zeros(shape, dtype)

    return jax.tree.map(fresh, template)

"""A decoder-only Transformer language model with KV-cache generation.

Pre-norm blocks ``x + attn(norm(x))`` then ``x + mlp(norm(x))``; attention goes through
``jax.nn.dot_product_attention``. ``TransformerBlock`` is shared with the ViT (non-causal).

The KV cache is the Flax linen one: calling the model with ``decode=True`` reads and writes a
``cache`` collection holding, per layer, ``key``/``value`` buffers ``[batch, length, heads,
head_dim]`` and, at the top, the write ``index``. ``init_cache`` makes an empty cache of a given
length; each call appends its tokens at ``index``, so a new token attends over the cache in
O(length) instead of recomputing the whole prefix. ``generate`` prefills with the prompt and
then samples one token per ``lax.scan`` step::

    model = TransformerLM(d_model=64, num_heads=4, num_layers=2, max_len=128)
    params = model.init(key, jnp.zeros((1, 8), jnp.int32))["params"]
    logits = model.apply({"params": params}, tokens, train=False)          # f32[b, T, 256]
    out = generate(model, params, prompt, key, max_new_tokens=32, top_k=10)  # i32[b, P + 32]
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtrain.models.partitioning import EMBED, HEADS, KV, MLP, VOCAB, logical
from jaxtrain.models.remat import rematerialised

Dtype = Any
POSITIONS = ("learned", "rotary")
NORMS = {"layernorm": nn.LayerNorm, "rmsnorm": nn.RMSNorm}
_EMBED_INIT = nn.initializers.normal(stddev=0.02)
_KERNEL_INIT = nn.initializers.lecun_normal()  # Flax's Dense default, named here to annotate it
_ZEROS, _ONES = nn.initializers.zeros_init(), nn.initializers.ones_init()


def rope(x: jax.Array, positions: jax.Array, base: float = 10000.0) -> jax.Array:
    """Rotary position embedding of ``x: [batch, T, heads, head_dim]`` at ``positions: int[., T]``.

    Channel pairs ``(i, i + head_dim/2)`` are rotated by ``position * base**(-2i/head_dim)``, so
    the score ``rope(q, p) . rope(k, p')`` depends on the positions only through ``p - p'``.
    Computed in float32, returned in ``x.dtype``.
    """
    head_dim = x.shape[-1]
    if head_dim % 2:
        raise ValueError(f"rotary positions need an even head dimension, got {head_dim}")
    half = head_dim // 2
    freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = jnp.asarray(positions, jnp.float32)[..., None] * freqs  # [., T, half]
    cos, sin = jnp.cos(angles)[..., None, :], jnp.sin(angles)[..., None, :]  # [., T, 1, half]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention ``[batch, T, d_model] -> [batch, T, d_model]``.

    With ``decode=True`` the keys/values of the given tokens are written into the ``cache``
    collection at ``cache_index`` and the queries attend to every cached position up to their
    own. The first such call (inside ``init``) only creates the empty cache.
    """

    num_heads: int
    causal: bool = True
    rotary: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        *,
        positions: jax.Array | None = None,
        decode: bool = False,
        cache_index: jax.Array | None = None,
    ) -> jax.Array:
        _, length, d_model = x.shape
        if d_model % self.num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={self.num_heads}")
        head_dim = d_model // self.num_heads
        qkv = nn.DenseGeneral(
            (3, self.num_heads, head_dim),
            dtype=self.dtype,
            kernel_init=logical(_KERNEL_INIT, EMBED, None, HEADS, KV),
            bias_init=logical(_ZEROS, None, HEADS, KV),
            name="qkv",
        )(x)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [batch, T, heads, head_dim]
        if self.rotary:
            if positions is None:
                raise ValueError("rotary attention needs the token positions")
            q, k = rope(q, positions), rope(k, positions)

        if decode:
            if not self.causal:
                raise ValueError("a KV cache only makes sense for causal attention")
            initialised = self.has_variable("cache", "key")
            cached_k = self.variable("cache", "key", jnp.zeros, k.shape, k.dtype)
            cached_v = self.variable("cache", "value", jnp.zeros, v.shape, v.dtype)
            if initialised:
                start = (0, cache_index, 0, 0)
                k = jax.lax.dynamic_update_slice(
                    cached_k.value, k.astype(cached_k.value.dtype), start
                )
                v = jax.lax.dynamic_update_slice(
                    cached_v.value, v.astype(cached_v.value.dtype), start
                )
                cached_k.value, cached_v.value = k, v
                query_pos = cache_index + jnp.arange(length)
                mask = jnp.arange(k.shape[1])[None, :] <= query_pos[:, None]  # [T, cache length]
                out = jax.nn.dot_product_attention(q, k, v, mask=mask[None, None])
            else:
                out = jax.nn.dot_product_attention(q, k, v, is_causal=True)
        else:
            out = jax.nn.dot_product_attention(q, k, v, is_causal=self.causal)
        return nn.DenseGeneral(
            d_model,
            axis=(-2, -1),
            dtype=self.dtype,
            kernel_init=logical(_KERNEL_INIT, HEADS, KV, EMBED),
            bias_init=logical(_ZEROS, EMBED),
            name="out",
        )(out)


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + drop(attn(norm(x)))`` then ``x + drop(mlp(norm(x)))``.

    ``x: [batch, T, d_model]`` in, same shape out. The MLP is ``d_model -> mlp_ratio * d_model
    -> d_model`` with GELU. ``causal=False`` for encoders (ViT).
    """

    num_heads: int
    mlp_ratio: int = 4
    dropout: float = 0.0
    causal: bool = True
    rotary: bool = False
    norm: str = "layernorm"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        *,
        train: bool = False,
        positions: jax.Array | None = None,
        decode: bool = False,
        cache_index: jax.Array | None = None,
    ) -> jax.Array:
        d_model = x.shape[-1]
        norm = functools.partial(_norm(self.norm), dtype=self.dtype)
        h = norm(name="norm_attn")(x)
        h = SelfAttention(self.num_heads, self.causal, self.rotary, self.dtype, name="attn")(
            h, positions=positions, decode=decode, cache_index=cache_index
        )
        x = x + nn.Dropout(self.dropout, deterministic=not train)(h)
        h = norm(name="norm_mlp")(x)
        h = nn.Dense(
            self.mlp_ratio * d_model,
            dtype=self.dtype,
            kernel_init=logical(_KERNEL_INIT, EMBED, MLP),
            bias_init=logical(_ZEROS, MLP),
            name="mlp_in",
        )(h)
        h = nn.Dense(
            d_model,
            dtype=self.dtype,
            kernel_init=logical(_KERNEL_INIT, MLP, EMBED),
            bias_init=logical(_ZEROS, EMBED),
            name="mlp_out",
        )(nn.gelu(h))
        return x + nn.Dropout(self.dropout, deterministic=not train)(h)


def _norm(name: str) -> Callable[..., nn.Module]:
    """The norm layer class ``name``, its scale (and bias) annotated ``embed``."""
    if name not in NORMS:
        raise ValueError(f"norm must be one of {sorted(NORMS)}, got {name!r}")
    if name == "rmsnorm":
        return functools.partial(nn.RMSNorm, scale_init=logical(_ONES, EMBED))
    return functools.partial(
        nn.LayerNorm, scale_init=logical(_ONES, EMBED), bias_init=logical(_ZEROS, EMBED)
    )


class TransformerLM(nn.Module):
    """Decoder-only causal language model: ``tokens i32[batch, T] -> logits f32[batch, T, vocab]``.

    ``logits[:, t]`` predicts ``tokens[:, t + 1]`` and depends only on ``tokens[:, :t + 1]``.
    ``positions`` is ``"learned"`` (an added ``[max_len, d_model]`` table) or ``"rotary"`` (RoPE
    on queries and keys). The output head is tied to the token embedding by default
    (``logits = h @ embed.T``; ``tie_embeddings=False`` gives a separate dense head).
    ``dtype`` is the compute dtype: with ``jnp.bfloat16`` the parameters stay float32, matmuls
    run in bfloat16, softmax and norm statistics in float32, and logits are returned float32.
    Dropout (on embeddings and each residual branch) is active only with ``train=True``, which
    then needs ``rngs={"dropout": key}``. ``decode=True``: see the module docstring.
    """

    vocab_size: int = 256
    d_model: int = 128
    num_heads: int = 4
    num_layers: int = 2
    mlp_ratio: int = 4
    max_len: int = 256
    positions: str = "learned"
    dropout: float = 0.0
    norm: str = "layernorm"
    tie_embeddings: bool = True
    dtype: Dtype = jnp.float32
    remat: bool = False  # recompute each block's activations in the backward pass

    @nn.compact
    def __call__(
        self, tokens: jax.Array, *, train: bool = False, decode: bool = False
    ) -> jax.Array:
        if tokens.ndim != 2:
            raise ValueError(f"TransformerLM expects tokens [batch, T], got shape {tokens.shape}")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}")
        length = tokens.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len={self.max_len}")

        start = jnp.zeros((), jnp.int32)
        if decode:
            initialised = self.has_variable("cache", "index")
            index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
            start = index.value
            if initialised:
                index.value = start + length
        positions = start + jnp.arange(length)[None, :]  # [1, T]

        embed = nn.Embed(
            self.vocab_size,
            self.d_model,
            dtype=self.dtype,
            embedding_init=logical(_EMBED_INIT, VOCAB, EMBED),
            name="embed",
        )
        x = embed(tokens)
        if self.positions == "learned":
            table = self.param(
                "pos_embed", logical(_EMBED_INIT, None, EMBED), (self.max_len, self.d_model)
            )
            x = x + jnp.take(table, positions, axis=0).astype(self.dtype)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        remat = self.remat and not decode  # generation keeps no activations to recompute
        block_cls = rematerialised(TransformerBlock) if remat else TransformerBlock
        for i in range(self.num_layers):
            block = block_cls(
                self.num_heads,
                self.mlp_ratio,
                self.dropout,
                causal=True,
                rotary=self.positions == "rotary",
                norm=self.norm,
                dtype=self.dtype,
                name=f"block_{i}",
            )
            if remat:
                x = block(x, train, positions=positions)
            else:
                x = block(x, train=train, positions=positions, decode=decode, cache_index=start)
        x = _norm(self.norm)(dtype=self.dtype, name="norm_out")(x)
        if self.tie_embeddings:
            logits = embed.attend(x)
        else:
            logits = nn.Dense(
                self.vocab_size,
                dtype=self.dtype,
                kernel_init=logical(_KERNEL_INIT, EMBED, VOCAB),
                bias_init=logical(_ZEROS, VOCAB),
                name="head",
            )(x)
        return logits.astype(jnp.float32)


def init_cache(model: TransformerLM, batch_size: int, length: int) -> Any:
    """An empty KV cache (the ``cache`` collection) for ``batch_size`` sequences of ``length``."""
    if length > model.max_len:
        raise ValueError(f"cache length {length} exceeds the model's max_len={model.max_len}")
    tokens = jax.ShapeDtypeStruct((batch_size, length), jnp.int32)
    shapes = jax.eval_shape(
        lambda t: model.init(jax.random.key(0), t, decode=True)["cache"], tokens
    )
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def sample_logits(
    key: jax.Array,
    logits: jax.Array,
    temperature: float | jax.Array = 1.0,
    top_k: int | jax.Array | None = None,
) -> jax.Array:
    """One token per row of ``logits: f32[batch, vocab]`` -> ``i32[batch]``.

    Keeps the ``top_k`` largest logits (all if None; ties with the k-th are kept), then samples
    from ``softmax(logits / temperature)``; ``temperature == 0`` takes the argmax (greedy). Both
    may be traced, so changing them does not recompile.
    """
    if top_k is not None:
        vocab = logits.shape[-1]
        k = jnp.clip(jnp.asarray(top_k, jnp.int32), 1, vocab)
        kth = jnp.take(jnp.sort(logits, axis=-1), vocab - k, axis=-1)[:, None]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    temperature = jnp.asarray(temperature, jnp.float32)
    scaled = logits / jnp.where(temperature > 0, temperature, 1.0)
    sampled = jax.random.categorical(key, scaled, axis=-1)
    return jnp.where(temperature > 0, sampled, jnp.argmax(logits, axis=-1)).astype(jnp.int32)


def generate(
    model: TransformerLM,
    params: Any,
    prompt: jax.Array,
    key: jax.Array,
    *,
    max_new_tokens: int,
    temperature: float | jax.Array = 1.0,
    top_k: int | None = None,
    return_logits: bool = False,
    slide: bool = True,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Continue ``prompt: i32[batch, P]`` by ``max_new_tokens`` sampled tokens (KV cache).

    Returns ``i32[batch, P + max_new_tokens]`` (the prompt, then the new tokens) and, with
    ``return_logits``, also ``f32[batch, max_new_tokens, vocab]``: the model's logits for each new
    token, before temperature and top-k. ``params`` is the ``params`` collection.

    The work runs in one jitted program (a prefill call, then a ``lax.scan`` of one-token cached
    steps) that is compiled once per ``model``, ``max_new_tokens`` and prompt shape;
    ``temperature`` (0 = greedy) and ``top_k`` are traced, so changing them does not recompile,
    and ``generate`` itself may be wrapped in ``jax.jit`` with ``model``, ``max_new_tokens`` and
    ``return_logits`` static.

    Past the context (``P + max_new_tokens > model.max_len``) the window slides: with
    ``keep = max_len // 2``, each round re-reads (prefills) the last ``keep`` tokens, or the
    whole text while it is shorter, and generates until the window is full (``max_len``
    tokens), so every new token sees between ``keep`` and ``max_len - 1`` tokens before it
    (the first round sees the prompt's last ``keep`` tokens when the prompt itself is longer).
    Each round draws its own keys (``fold_in(key, round)``); one program is compiled per
    round shape. ``slide=False`` raises ValueError instead.
    """
    batch, prompt_len = prompt.shape
    if prompt_len < 1 or max_new_tokens < 1:
        raise ValueError(
            f"generate needs a prompt of at least one token and max_new_tokens >= 1, got a prompt"
            f" of {prompt_len} tokens and max_new_tokens={max_new_tokens}"
        )
    if slide and prompt_len + max_new_tokens > model.max_len:
        keep = max(1, model.max_len // 2)
        out, pieces, done, step = prompt.astype(jnp.int32), [], 0, 0
        while done < max_new_tokens:
            context = out[:, -keep:] if out.shape[1] > keep else out
            count = min(model.max_len - context.shape[1], max_new_tokens - done)
            new, logits = generate(model, params, context, jax.random.fold_in(key, step),
                                   max_new_tokens=count, temperature=temperature, top_k=top_k,
                                   return_logits=True, slide=False)  # fmt: skip
            out = jnp.concatenate([out, new[:, context.shape[1] :]], axis=1)
            pieces.append(logits)
            done, step = done + count, step + 1
        return (out, jnp.concatenate(pieces, axis=1)) if return_logits else out
    if prompt_len + max_new_tokens > model.max_len:
        raise ValueError(
            f"prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) ="
            f" {prompt_len + max_new_tokens} exceeds the model's max_len={model.max_len}; shorten"
            " the prompt, ask for fewer tokens or build the model with a larger max_len"
        )
    if isinstance(top_k, int) and not 1 <= top_k <= model.vocab_size:
        raise ValueError(f"top_k must be in [1, {model.vocab_size}] or None, got {top_k}")
    if isinstance(temperature, int | float) and temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    top_k = model.vocab_size if top_k is None else top_k
    tokens, logits = _generate(model, params, prompt, key, temperature, top_k, max_new_tokens)
    return (tokens, logits) if return_logits else tokens


@functools.partial(jax.jit, static_argnums=(0, 6))
def _generate(model, params, prompt, key, temperature, top_k, max_new_tokens):
    batch, prompt_len = prompt.shape
    prompt = prompt.astype(jnp.int32)

    def forward(cache, tokens):
        logits, updated = model.apply(
            {"params": params, "cache": cache}, tokens, decode=True, mutable=["cache"]
        )
        return logits, updated["cache"]

    cache = init_cache(model, batch, prompt_len + max_new_tokens)
    logits, cache = forward(cache, prompt)  # prefill: the whole prompt in one call
    logits = logits[:, -1]
    keys = jax.random.split(key, max_new_tokens)
    first = sample_logits(keys[0], logits, temperature, top_k)

    def step(carry, key):
        cache, token = carry
        step_logits, cache = forward(cache, token[:, None])
        step_logits = step_logits[:, 0]
        token = sample_logits(key, step_logits, temperature, top_k)
        return (cache, token), (token, step_logits)

    _, (tokens, step_logits) = jax.lax.scan(step, (cache, first), keys[1:])
    out = jnp.concatenate([prompt, first[:, None], tokens.T], axis=1)
    all_logits = jnp.concatenate([logits[:, None], jnp.swapaxes(step_logits, 0, 1)], axis=1)
    return out, all_logits


__all__ = [
    "SelfAttention",
    "TransformerBlock",
    "TransformerLM",
    "generate",
    "init_cache",
    "rope",
    "sample_logits",
]

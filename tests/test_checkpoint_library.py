"""Checkpoints as a library: one call to save a user's state (and a grain iterator), one to
restore it; every missing piece is a one-line error before Orbax's threads see it."""

from __future__ import annotations

from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxtrain
from jaxtrain.checkpoint import Checkpoints, CorruptCheckpoint, MissingPart
from jaxtrain.models import MLP
from jaxtrain.train.state import create_train_state


def _state():
    return create_train_state(MLP((8,), 3), optax.adam(1e-3), (4,), seed=0)


def _iterator():
    return iter(grain.MapDataset.range(100).shuffle(seed=1).to_iter_dataset())


def _equal(a, b) -> bool:
    def numbers(x):
        if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(x)

    return all(
        np.array_equal(numbers(x), numbers(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_a_train_state_and_an_iterator_position_round_trip(tmp_path: Path) -> None:
    state = _state()
    iterator = _iterator()
    seen = [next(iterator) for _ in range(7)]
    folder = jaxtrain.save_checkpoint(tmp_path / "ck", state, step=7, iterator=iterator)
    assert folder == (tmp_path / "ck" / "7").absolute()
    expected_next = [next(iterator) for _ in range(5)]
    fresh = _iterator()
    like = jax.tree.map(jnp.zeros_like, state)
    restored = jaxtrain.restore_checkpoint(tmp_path / "ck", like, iterator=fresh)
    assert _equal(restored, state)
    assert [next(fresh) for _ in range(5)] == expected_next  # the stream goes on where it was
    assert len(seen) == 7


def test_steps_are_kept_and_the_latest_is_restored_by_default(tmp_path: Path) -> None:
    params = {"w": jnp.arange(3.0)}
    for step in (1, 2, 3):
        jaxtrain.save_checkpoint(tmp_path, {"w": params["w"] * step}, step)
    assert sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == [1, 2, 3]
    np.testing.assert_array_equal(jaxtrain.restore_checkpoint(tmp_path, params)["w"], [0, 3, 6])
    np.testing.assert_array_equal(
        jaxtrain.restore_checkpoint(tmp_path, step=1)["w"], [0, 1, 2]
    )  # without a template: the arrays as saved


def test_missing_pieces_are_one_line_errors(tmp_path: Path) -> None:
    state = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="state is None"):
        jaxtrain.save_checkpoint(tmp_path, None, 0)
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        jaxtrain.save_checkpoint(tmp_path, state, -1)
    with pytest.raises(TypeError, match="a list_iterator has no position to checkpoint"):
        jaxtrain.save_checkpoint(tmp_path, state, 0, iterator=iter([1, 2]))
    jaxtrain.save_checkpoint(tmp_path, state, 0)
    with pytest.raises(ValueError, match="already holds step 0"):
        jaxtrain.save_checkpoint(tmp_path, state, 0)
    with pytest.raises(ValueError, match=r"has no step 4 \(steps: 0\)"):
        jaxtrain.restore_checkpoint(tmp_path, state, step=4)
    with pytest.raises(MissingPart, match="holds no data-iterator position"):
        jaxtrain.restore_checkpoint(tmp_path, state, iterator=_iterator())
    with pytest.raises(ValueError, match="does not exist"):
        jaxtrain.restore_checkpoint(tmp_path / "absent", state)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no checkpoint"):
        jaxtrain.restore_checkpoint(tmp_path / "empty", state)


def test_asking_for_an_iterator_a_checkpoint_lacks_does_not_set_it_aside(tmp_path: Path) -> None:
    """A good checkpoint saved without an iterator is not 'damaged': restoring it with one is
    refused, and the step stays where it is."""
    with Checkpoints(tmp_path) as checkpoints:
        checkpoints.save(3, {"w": jnp.ones(2)})
        checkpoints.wait()
        with pytest.raises(MissingPart):
            checkpoints.restore_latest_good({"w": jnp.zeros(2)}, _iterator())
        assert checkpoints.all_steps() == [3]
    assert not list(tmp_path.glob("*.damaged*"))


def test_a_checkpoint_whose_arrays_do_not_match_their_digest_is_refused(tmp_path: Path) -> None:
    state = {"w": jnp.arange(4.0)}
    jaxtrain.save_checkpoint(tmp_path, state, 5)
    records = [p for p in (tmp_path / "5" / "integrity").rglob("*") if p.is_file()]
    edited = 0
    for path in records:
        text = path.read_bytes()
        if b'"state_sha256": "' in text:
            path.write_bytes(text.replace(b'"state_sha256": "', b'"state_sha256": "0', 1))
            edited += 1
    assert edited == 1
    with pytest.raises(CorruptCheckpoint, match="do not match the digest"):
        jaxtrain.restore_checkpoint(tmp_path, state)

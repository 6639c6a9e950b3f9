"""Text at scale: corpora by directory or glob (streamed by file), passage dedup and the
passage leakage check, xz beside the model.

References: the in-memory byte windows of the same documents (``byte_windows`` over the
concatenated stream), a brute-force substring search for shared 13-word runs, the ``xz``
command line for the compressor's size, and the unigram baseline on arrays.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from jaxtrain.data import DatasetError, prepare_data
from jaxtrain.data.corpus import CorpusReader, corpus_files, text_files
from jaxtrain.data.dedup import paragraphs, passage_leakage, shingles
from jaxtrain.data.text import unigram_bits_per_byte
from jaxtrain.data.text_prepare import documents_of, unigram_bits, xz_bits_per_byte
from tests.test_streaming import load_config_text

K = 13


def _corpus(tmp_path: Path) -> Path:
    """Twelve small documents (files) and two that are not text."""
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    for i in range(12):
        text = "\n\n".join(
            " ".join(rng.choice(words, 20 + 5 * j)) for j in range(1 + i % 4)
        )  # paragraphs of distinct lengths
        (root / ("sub" if i % 3 else ".") / f"doc{i:02d}.txt").write_text(text + "\n")
    (root / "blob.bin").write_bytes(b"\x00\x01\x02" * 50)
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    return root


def _lm_yaml(path: str, stream: str, extra: str = "") -> str:
    return f"""
name: corpus_lm
data: {{name: corpus, path: "{path}", stream: {stream}, sequence_length: 16, batch_size: 8,
        validation_fraction: 0.2, test_fraction: 0.2{extra}}}
model: {{name: transformer_lm, d_model: 16, num_heads: 2, num_layers: 1}}
optimizer: {{name: adam, learning_rate: 0.01}}
train: {{epochs: 1, log_every: 5}}
"""


def test_a_directory_or_glob_lists_text_files_and_skips_the_rest(tmp_path) -> None:
    root = _corpus(tmp_path)
    files, skipped = text_files(str(root))
    assert len(files) == 12 and skipped == 2
    assert [Path(f).name for f, _ in corpus_files(str(root / "sub" / "*.txt"))] == [
        f"doc{i:02d}.txt" for i in range(12) if i % 3
    ]
    with pytest.raises(DatasetError, match="matches no file"):
        corpus_files(str(root / "*.none"))


def test_streamed_corpus_windows_equal_the_in_memory_windows(tmp_path) -> None:
    """Same files, same split by document, same next-byte windows, read lazily or not."""
    root = _corpus(tmp_path)
    streamed = prepare_data(load_config_text(_lm_yaml(str(root), "true")).data, streamable=True)
    memory = prepare_data(load_config_text(_lm_yaml(str(root), "false")).data, streamable=True)
    for name in ("train", "validation", "test"):
        lazy, whole = streamed.splits[name], memory.splits[name]
        assert len(lazy) == len(whole) > 0
        batch = lazy.batch(np.arange(len(lazy)))
        np.testing.assert_array_equal(batch["inputs"], whole.inputs)
        np.testing.assert_array_equal(batch["labels"], whole.labels)
        np.testing.assert_array_equal(np.asarray(lazy.labels), whole.labels)
    # A document sits in one split only: the files of the three readers are disjoint.
    readers = [set(streamed.splits[n].reader.files) for n in ("train", "validation", "test")]
    assert not (readers[0] & readers[1] or readers[0] & readers[2] or readers[1] & readers[2])


def test_a_window_across_files_reads_both(tmp_path) -> None:
    (tmp_path / "a").write_bytes(b"abcde")
    (tmp_path / "b").write_bytes(b"fghij")
    reader = CorpusReader([str(tmp_path / "a"), str(tmp_path / "b")], [5, 5], 3)
    inputs, labels = reader.read(np.array([1, 2]))
    assert len(reader) == 3
    assert (
        bytes(inputs[0].astype(np.uint8)) == b"def" and bytes(labels[0].astype(np.uint8)) == b"efg"
    )
    assert bytes(labels[1].astype(np.uint8)) == b"hij"


def _runs(text: str) -> set[str]:
    """Every run of K words inside one paragraph, as ' w1 w2 ... wK ' (brute force)."""
    found = set()
    for passage in paragraphs(text):
        words = passage.split()
        found.update(" " + " ".join(words[i : i + K]) + " " for i in range(len(words) - K + 1))
    return found


def test_pydoc_text_leaks_passages_and_dedup_removes_every_shared_run() -> None:
    base = "name: lm\ndata: {name: pydoc_text, validation_fraction: 0.1, test_fraction: 0.1%s}\n"
    leaky = prepare_data(load_config_text(base % "").data)
    leakage = leaky.report.leakage
    assert leakage["found"] > 50 and leakage["pairs"]["train/test"]["share_of_bytes"] > 0.1
    clean = prepare_data(load_config_text(base % ", dedup_passages: true").data)
    assert clean.report.leakage["found"] == 0
    record = clean.report.step("dedup_passages")
    assert record["passages"] > 100 and record["bytes"] > 10_000
    # Brute force on the clean splits: no K-word run of a held-out paragraph in train.
    texts = {
        name: "".join(documents_of_split(clean, name)) for name in ("train", "validation", "test")
    }
    train_runs = _runs(texts["train"])
    assert not (_runs(texts["test"]) & train_runs)
    assert not (_runs(texts["validation"]) & train_runs)
    # ... and on the leaky ones the check's first reported passage does share a run.
    first = leakage["pairs"]["train/test"]["first"][0]["start"]
    assert first in "".join(documents_of_split(leaky, "test"))


def documents_of_split(data, name: str) -> list[str]:
    """The text of a prepared LM split from its windows (the stream, first byte + labels)."""
    split = data.splits[name]
    stream = np.concatenate([split.inputs[:1, 0], np.asarray(split.labels).reshape(-1)])
    return [stream.astype(np.uint8).tobytes().decode("utf-8", errors="replace")]


def test_shingles_are_runs_of_k_words() -> None:
    assert len(shingles("a b c", 3)) == 1 and len(shingles("a b", 3)) == 0
    assert shingles("x a b c y", 3)[1] == shingles("a b c", 3)[0]
    result = passage_leakage({"train": ["a b c d e f\n\nother"], "test": ["q a b c d r"]}, 3)
    assert result["found"] == 1 and result["pairs"]["train/test"]["passages"] == 1
    assert documents_of is not None


@pytest.mark.skipif(shutil.which("xz") is None, reason="needs the xz command")
def test_xz_bits_per_byte_is_what_the_xz_command_writes() -> None:
    text = ("The quick brown fox jumps over the lazy dog. " * 40 + "Fin.").encode()
    size = len(subprocess.run(["xz", "-c"], input=text, capture_output=True).stdout)
    assert xz_bits_per_byte(text) == pytest.approx(8 * size / len(text), abs=8 * 8 / len(text))
    context = b"jumps over the lazy dog. " * 10
    assert xz_bits_per_byte(text, context) < xz_bits_per_byte(text)


def test_unigram_from_counts_equals_the_array_baseline() -> None:
    rng = np.random.default_rng(1)
    train, held_out = rng.integers(0, 60, 500), rng.integers(0, 80, 300)
    counts = np.bincount(train, minlength=256), np.bincount(held_out, minlength=256)
    assert unigram_bits(*counts) == pytest.approx(unigram_bits_per_byte(train, held_out))


@pytest.mark.slow  # ~20 s: compiles a Transformer, evaluates, analyses
def test_a_streamed_corpus_trains_by_directory_and_reports_xz(tmp_path) -> None:
    import json

    from jaxtrain.cli import main

    root = _corpus(tmp_path)
    config = tmp_path / "lm.yaml"
    config.write_text(_lm_yaml(str(root), "true"))
    assert main(["train", str(config), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]) == 0
    run_dir = next((tmp_path / "runs" / "corpus_lm").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"xz_bits_per_byte", "xz_given_train_bits_per_byte"} <= set(metrics["baselines"])
    assert "baseline xz_bits_per_byte" in (run_dir / "report.md").read_text()
    assert "(streamed)" in (run_dir / "data_report.md").read_text()


def test_dedup_of_a_streamed_corpus_is_refused(tmp_path) -> None:
    root = _corpus(tmp_path)
    with pytest.raises(DatasetError, match="data.dedup_passages"):
        prepare_data(
            load_config_text(_lm_yaml(str(root), "true", ", dedup_passages: true")).data,
            streamable=True,
        )

"""The shard format: roundtrip, splitting, atomicity, and byte-for-byte agreement with datatrove's writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shard_format.shards import (
    ShardInfo,
    ShardReader,
    ShardWriter,
    sha256_file,
    token_dtype_for_vocab,
)

SMALL_VOCAB = 50_000  # uint16 tokens
LARGE_VOCAB = 100_000  # uint32 tokens


def random_documents(seed: int, count: int, vocab_size: int, max_len: int = 300) -> list[np.ndarray]:
    """Documents of random lengths; each ends with EOS (vocab_size - 1), which appears nowhere else."""
    rng = np.random.default_rng(seed)
    eos = vocab_size - 1
    return [
        np.append(rng.integers(0, eos, size=int(rng.integers(0, max_len))), eos).astype(np.int64)
        for _ in range(count)
    ]


def write_shards(folder: Path, documents: list[np.ndarray], **kwargs) -> list[ShardInfo]:
    options = dict(prefix="train", vocab_size=SMALL_VOCAB, max_tokens_per_shard=10_000) | kwargs
    with ShardWriter(folder, **options) as writer:
        for doc in documents:
            writer.write(doc)
    return writer.close()


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_token_dtype_for_vocab():
    assert token_dtype_for_vocab(256) == np.uint16
    assert token_dtype_for_vocab(65_536) == np.uint16
    assert token_dtype_for_vocab(65_537) == np.uint32
    assert token_dtype_for_vocab(2**32) == np.uint32
    for bad in (0, 2**32 + 1):
        with pytest.raises(ValueError):
            token_dtype_for_vocab(bad)


@pytest.mark.parametrize("vocab_size", [SMALL_VOCAB, LARGE_VOCAB])
def test_roundtrip(tmp_path, vocab_size):
    documents = random_documents(seed=0, count=200, vocab_size=vocab_size)
    shards = write_shards(tmp_path, documents, vocab_size=vocab_size, max_tokens_per_shard=5_000)
    assert len(shards) > 1
    assert sum(s.documents for s in shards) == len(documents)
    assert sum(s.tokens for s in shards) == sum(len(d) for d in documents)

    read_back = []
    for shard in shards:
        reader = ShardReader(tmp_path / shard.path)
        assert reader.dtype == token_dtype_for_vocab(vocab_size)
        assert (reader.num_documents, reader.num_tokens) == (shard.documents, shard.tokens)
        assert (tmp_path / shard.path).stat().st_size == shard.tokens * reader.dtype.itemsize
        read_back.extend(reader)
    assert len(read_back) == len(documents)
    for got, expected in zip(read_back, documents):
        np.testing.assert_array_equal(got, expected)


def test_reader_returns_read_only_views_and_spans_documents(tmp_path):
    documents = random_documents(seed=1, count=20, vocab_size=SMALL_VOCAB, max_len=50)
    (shard,) = write_shards(tmp_path, documents)
    reader = ShardReader(tmp_path / shard.path)
    concatenated = np.concatenate(documents)

    doc = reader.document(3)
    assert not doc.flags.owndata and not doc.flags.writeable
    np.testing.assert_array_equal(reader.document(-1), documents[-1])
    window = reader.tokens(10, 10 + 129)  # crosses several document boundaries
    assert not window.flags.owndata
    np.testing.assert_array_equal(window, concatenated[10:139])
    np.testing.assert_array_equal(reader.tokens(0, reader.num_tokens), concatenated)
    np.testing.assert_array_equal(reader.document_ends, np.cumsum([len(d) for d in documents]))

    with pytest.raises(IndexError):
        reader.document(len(documents))
    with pytest.raises(IndexError):
        reader.tokens(0, reader.num_tokens + 1)


def test_shards_split_at_token_limit_without_splitting_documents(tmp_path):
    lengths = [30, 30, 30, 30, 150, 10, 50, 40, 1]
    documents = [np.full(n, 7) for n in lengths]
    shards = write_shards(tmp_path, documents, max_tokens_per_shard=100)

    assert [s.path for s in shards] == [f"train_{i:05d}.ds" for i in range(5)]
    # 30+30+30 | 30 | 150 (longer than the limit: alone) | 10+50+40 (exactly the limit) | 1
    assert [s.tokens for s in shards] == [90, 30, 150, 100, 1]
    assert [s.documents for s in shards] == [3, 1, 1, 3, 1]
    lengths_read = [len(doc) for s in shards for doc in ShardReader(tmp_path / s.path)]
    assert lengths_read == lengths


def test_identical_input_gives_identical_bytes(tmp_path):
    documents = random_documents(seed=2, count=100, vocab_size=SMALL_VOCAB)
    options = dict(max_tokens_per_shard=4_000, formats=("datatrove", "megatron"), tokenizer_name="bpe-8k")
    first = write_shards(tmp_path / "a", documents, **options)
    second = write_shards(tmp_path / "b", documents, **options)
    assert first == second
    assert folder_bytes(tmp_path / "a") == folder_bytes(tmp_path / "b")


def test_shard_info_hashes_match_files(tmp_path):
    documents = random_documents(seed=3, count=50, vocab_size=SMALL_VOCAB)
    shards = write_shards(tmp_path, documents, max_tokens_per_shard=3_000, formats=("datatrove", "megatron"))
    written = set()
    for shard in shards:
        stem = shard.path.removesuffix(".ds")
        assert set(shard.extra_files) == {f"{stem}.ds.index", f"{stem}.ds.metadata", f"{stem}.bin", f"{stem}.idx"}
        assert shard.sha256 == sha256_file(tmp_path / shard.path)
        for name, digest in shard.extra_files.items():
            assert digest == sha256_file(tmp_path / name)
        written |= {shard.path, *shard.extra_files}
    assert written == {p.name for p in tmp_path.iterdir()}  # no temporary file left behind


def test_empty_writer_writes_nothing(tmp_path):
    folder = tmp_path / "shards"
    with ShardWriter(folder, "train", vocab_size=SMALL_VOCAB, max_tokens_per_shard=100) as writer:
        pass
    assert writer.close() == []
    assert list(folder.iterdir()) == []


def test_exception_discards_unfinished_shard_only(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, "train", vocab_size=SMALL_VOCAB, max_tokens_per_shard=10) as writer:
            writer.write(np.arange(8))
            writer.write(np.arange(8))  # finishes train_00000, opens train_00001
            assert sorted(p.name for p in tmp_path.glob("*.ds")) == ["train_00000.ds"]
            raise RuntimeError("crash while filling train_00001")
    assert [s.path for s in writer.shards] == ["train_00000.ds"]
    remaining = sorted(p.name for p in tmp_path.iterdir())
    assert remaining == ["train_00000.ds", "train_00000.ds.index", "train_00000.ds.metadata"]


def test_rejects_invalid_documents_and_arguments(tmp_path):
    writer = ShardWriter(tmp_path, "train", vocab_size=1_000, max_tokens_per_shard=100)
    out_of_vocab, negative, empty, two_d, floats = [1, 1_000], [-1, 2], [], [[1, 2], [3, 4]], [0.5]
    for bad in (out_of_vocab, negative, empty, two_d, floats):
        with pytest.raises(ValueError):
            writer.write(bad)
    writer.close()
    with pytest.raises(ValueError):
        writer.write(np.array([1]))
    with pytest.raises(ValueError):
        ShardWriter(tmp_path, "train", vocab_size=1_000, max_tokens_per_shard=100, formats=("megatron",))
    with pytest.raises(ValueError):
        ShardWriter(tmp_path, "train", vocab_size=1_000, max_tokens_per_shard=0)


@pytest.mark.parametrize("vocab_size", [SMALL_VOCAB, LARGE_VOCAB])
def test_matches_datatrove_writers_byte_for_byte(tmp_path, vocab_size):
    from datatrove.pipeline.tokens.megatron_tokenizer import MegatronTokenizedFile
    from datatrove.pipeline.tokens.tokenizer import TokenizedFile

    documents = random_documents(seed=4, count=80, vocab_size=vocab_size)
    ours = tmp_path / "ours"
    (shard,) = write_shards(
        ours, documents, vocab_size=vocab_size, max_tokens_per_shard=10**6,
        formats=("datatrove", "megatron"), tokenizer_name="HuggingFaceTB/SmolLM-135M",
    )
    token_size = token_dtype_for_vocab(vocab_size).itemsize

    theirs = tmp_path / "theirs"
    ds_file = TokenizedFile(
        str(theirs), "train_00000.ds", tokenizer_name_or_path="HuggingFaceTB/SmolLM-135M",
        save_final_metadata=True, token_size=token_size,
    )
    megatron_file = MegatronTokenizedFile(str(theirs), "train_00000", token_size=token_size)
    for doc in documents:
        ds_file.write(doc.tolist(), None)
        megatron_file.write(doc.tolist())
    ds_file.close()
    megatron_file.close()

    assert folder_bytes(ours) == folder_bytes(theirs)
    assert shard.tokens == len(ds_file)


@pytest.mark.parametrize("vocab_size", [SMALL_VOCAB, LARGE_VOCAB])
def test_datatrove_folder_dataset_reads_our_shards(tmp_path, vocab_size):
    from datatrove.utils.dataset import DatatroveFolderDataset

    seq_len = 63
    documents = random_documents(seed=5, count=120, vocab_size=vocab_size)
    shards = write_shards(tmp_path, documents, vocab_size=vocab_size, max_tokens_per_shard=6_000)
    assert len(shards) > 1
    token_size = token_dtype_for_vocab(vocab_size).itemsize

    # The dataset cuts each file into consecutive windows of seq_len + 1 tokens and drops the remainder.
    expected = []
    for shard in shards:
        tokens = ShardReader(tmp_path / shard.path).tokens(0, shard.tokens)
        n_windows = shard.tokens // (seq_len + 1)
        expected.extend(tokens[: n_windows * (seq_len + 1)].reshape(n_windows, seq_len + 1))

    by_index = DatatroveFolderDataset(str(tmp_path), seq_len, token_size=token_size, return_positions=True)
    by_eos = DatatroveFolderDataset(
        str(tmp_path), seq_len, token_size=token_size, return_positions=True, positions_from_eos_token_id=vocab_size - 1
    )
    assert len(by_index) == len(expected)
    for i, window in enumerate(expected):
        sample = by_index[i]
        np.testing.assert_array_equal(sample["input_ids"].numpy(), window)
        # positions from our .ds.index agree with positions from the EOS tokens: the index conventions match
        np.testing.assert_array_equal(sample["positions"].numpy(), by_eos[i]["positions"].numpy())

"""The training data loader: packed fixed-length samples from the data pipeline's token shards.

OLMo-core style: the order of every sample ever read follows from a few numbers, so the loader's state
is ``{"seed", "epoch", "samples_consumed"}`` and resuming is exact, whatever the number of ranks.

**Packing.** Within a split, each source's shards (in manifest order) are one concatenated token
stream of ``T`` tokens; documents already end with EOS. Sample ``i`` of a source is the ``seq_len + 1``
tokens ``stream[i * seq_len : i * seq_len + seq_len + 1]`` (inputs ``[:-1]``, targets ``[1:]``):
consecutive samples share one token, so every token of the stream but the first is a target exactly
once. A source holds ``(T - 1) // seq_len`` samples; the last ``<= seq_len`` tokens are left out. Samples
are read from the memory-mapped shards (`ShardReader.tokens` views; one that crosses a shard boundary
is assembled from the views of both shards), never by loading a shard. Construction reads the manifest
only (or takes it already read): sample counts come from its token counts, and a shard is opened the first
time a sample needs it (at most `max_open_shards` stay mapped; a shard's index is never read).

**Mixing.** An epoch is ``samples_per_epoch = sum of the packed samples of all train sources`` samples,
whatever the weights. Source ``s`` gets ``count_s`` of them: its weight share times ``samples_per_epoch``,
rounded by largest remainder so that the counts add up to exactly ``samples_per_epoch`` (each within 1
of ``round(share * samples_per_epoch)``). Empty weights mean proportional to each source's samples
(i.e. its tokens): every sample exactly once per epoch. A source with ``count_s <= n_s`` samples
contributes ``count_s`` distinct samples drawn at random (a fresh draw every epoch); one with more
contributes all its samples ``count_s // n_s`` times plus ``count_s % n_s`` distinct random ones. The
epoch's list is then shuffled. Nothing of an epoch's size is built: position ``p`` of epoch ``e`` maps to
a slot of the epoch through a keyed bijection of ``[0, samples_per_epoch)`` (`permute`: a Feistel network
with cycle walking), a source's extra slots to its samples through another; their keys come from
``numpy.random.SeedSequence([seed, e, stream])`` (seed and epoch together, so seed 1 epoch 1 is not seed
2 epoch 0). Memory and start-up do not depend on the corpus size.

**Ranks.** The order is one global sequence of samples over all epochs: position ``k`` is sample
``k % samples_per_epoch`` of epoch ``k // samples_per_epoch``. ``samples_consumed`` counts global
positions consumed, across ranks. A micro-step takes the next ``micro_batch_size * dp_world`` positions
``[S, S + micro_batch_size * dp_world)`` where ``S = samples_consumed``; rank ``r`` gets positions
``S + r, S + r + dp_world, S + r + 2 * dp_world, ...`` (``micro_batch_size`` of them), and every rank
advances ``samples_consumed`` by ``micro_batch_size * dp_world``. A global (optimizer) step of
``global_batch_size = micro_batch_size * grad_accum * dp_world`` samples therefore consumes positions
``[t * global_batch_size, (t + 1) * global_batch_size)`` for step ``t``: keep ``global_batch_size`` fixed
and the samples of each step are the same whatever the number of ranks, so a run can resume on another
number of ranks and keep its data order.

**Validation.** `validation_batches` reads each source of the val split sequentially (sources in name
order, or only ``source``), every packed sample exactly once; sample ``k`` of that sequence goes to rank
``k % dp_world``. Ranks may get one sample (so one batch) fewer: sum losses and token counts locally
and all-reduce them after the loop.
"""

from __future__ import annotations

import math
import mmap
import numbers
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pretrain.config import DataConfig
from shard_format import manifest as manifest_lib
from shard_format.errors import InputError
from shard_format.shards import TOKEN_DTYPES, ShardReader, token_dtype_for_vocab

__all__ = [
    "DataConfig",
    "MixedSampleOrder",
    "PackedShardDataset",
    "TrainBatches",
    "ValidationBatches",
    "build_train_batches",
    "permute",
    "validation_batches",
]

STATE_KEYS = ("seed", "epoch", "samples_consumed")


# --------------------------------------------------------------------------------------------------
# packing


@dataclass
class _Source:
    name: str
    shard_paths: list[str]  # shards with at least one token, in manifest order (relative to the folder)
    shard_starts: np.ndarray  # int64 [len(shard_paths) + 1]: offset of each shard in the stream, then the total

    @property
    def num_tokens(self) -> int:
        return int(self.shard_starts[-1])


class PackedShardDataset:
    """The packed samples of one split of a shard folder, per source (see the module docstring).

    Construction reads ``manifest.json`` (or takes the `manifest` already read); it touches no shard,
    so it costs the same on every rank whatever the number of shards. A shard is opened the first time a
    sample needs it: its size is checked against the manifest then, and its index is never read. At most
    `max_open_shards` shards stay mapped (least recently used first out), far below the kernel's limit
    on memory maps per process (``vm.max_map_count``, 65,530 by default).
    `sources` selects some of the split's sources (default: all of them, in name order).

    `access` is the kernel advice for the shards' memory maps. "random" (training: shuffled samples)
    reads only the pages a sample touches: without it every page fault reads ahead the whole
    read-around window (``read_ahead_kb``, 8 MiB on some machines) for a ~0.5 KiB sample, which makes
    a corpus larger than the page cache 100x slower. "sequential" (validation) reads ahead
    aggressively; "default" leaves the kernel's choice. `prefetch` asks the kernel to start reading a
    sample's pages in the background (the train loader calls it a few micro-batches ahead).
    """

    ACCESS = {"random": getattr(mmap, "MADV_RANDOM", None), "sequential": getattr(mmap, "MADV_SEQUENTIAL", None),
              "default": None}

    def __init__(self, path: str | os.PathLike[str], split: str = "train", seq_len: int = 256,
                 sources: Sequence[str] | None = None, access: str = "random", manifest: dict | None = None,
                 max_open_shards: int = 1024) -> None:
        if not isinstance(seq_len, numbers.Integral) or isinstance(seq_len, bool) or seq_len < 1:
            raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
        seq_len = int(seq_len)
        if access not in self.ACCESS:
            raise ValueError(f"access must be one of {sorted(self.ACCESS)}, got {access!r}")
        if max_open_shards < 1:
            raise ValueError(f"max_open_shards must be >= 1, got {max_open_shards}")
        self.access = access
        self.path = Path(path)
        self.manifest = manifest_lib.read(self.path) if manifest is None else manifest
        self.max_open_shards = max_open_shards
        # (source, shard number) -> (reader, its memory map), least recently used first
        self._open: OrderedDict[tuple[str, int], tuple[ShardReader, mmap.mmap | None]] = OrderedDict()
        self.folder = self.path if self.path.is_dir() else self.path.parent
        self.split = split
        self.seq_len = seq_len
        tokenizer = self.manifest.get("tokenizer", {})
        self.vocab_size: int | None = tokenizer.get("vocab_size")
        self.eos_id: int | None = tokenizer.get("eos_id")
        self.dtype = self._token_dtype()

        splits = self.manifest.get("splits", {})
        if split not in splits:
            raise ValueError(f"{self.folder}: no split {split!r} in the manifest (it has {sorted(splits)})")
        available = splits[split]["sources"]
        if sources is None:
            sources = sorted(available)
        elif unknown := [s for s in sources if s not in available]:
            raise ValueError(f"{self.folder}: no source {unknown[0]!r} in split {split!r} "
                             f"(it has {sorted(available)})")
        if not sources:
            raise ValueError(f"{self.folder}: split {split!r} has no sources")
        self._sources = {name: self._source(name, available[name]["shards"]) for name in sources}

    def _token_dtype(self) -> np.dtype:
        name = self.manifest.get("token_dtype")
        try:
            dtype = np.dtype(name).newbyteorder("<")
        except TypeError as exc:
            raise ValueError(f"{self.folder}: manifest token_dtype {name!r} is not a numpy dtype") from exc
        if dtype not in TOKEN_DTYPES:
            raise ValueError(f"{self.folder}: manifest token_dtype {name!r}: the loader reads uint16 or uint32 shards")
        if self.vocab_size is not None and token_dtype_for_vocab(self.vocab_size) != dtype:
            raise ValueError(f"{self.folder}: token dtype mismatch: manifest token_dtype {name!r} but vocab_size "
                             f"{self.vocab_size} is stored as {token_dtype_for_vocab(self.vocab_size).name}")
        return dtype

    def _source(self, name: str, shards: list[dict]) -> _Source:
        paths = [shard["path"] for shard in shards if int(shard["tokens"])]
        starts = np.zeros(len(paths) + 1, dtype=np.int64)
        np.cumsum([int(shard["tokens"]) for shard in shards if int(shard["tokens"])], out=starts[1:])
        return _Source(name, paths, starts)

    @property
    def sources(self) -> list[str]:
        return list(self._sources)

    def num_tokens(self, source: str) -> int:
        return self._get(source).num_tokens

    def num_shards(self, source: str) -> int:
        """Shards of `source` that hold tokens."""
        return len(self._get(source).shard_paths)

    def num_samples(self, source: str) -> int:
        """Packed samples of `source`: (tokens - 1) // seq_len (0 when it holds fewer than seq_len + 1 tokens)."""
        return max(self._get(source).num_tokens - 1, 0) // self.seq_len

    @property
    def samples_per_source(self) -> dict[str, int]:
        return {name: self.num_samples(name) for name in self._sources}

    def check_samples(self, source: str) -> None:
        """Raise if `source` is too short for one sample of seq_len + 1 tokens."""
        if self.num_samples(source) == 0:
            raise ValueError(f"source {source!r} of split {self.split!r} holds {self.num_tokens(source)} tokens, "
                             f"fewer than seq_len + 1 = {self.seq_len + 1}: lower seq_len or leave the source out")

    def sample(self, source: str, idx: int) -> np.ndarray:
        """Sample `idx` of `source`: seq_len + 1 tokens in the shard dtype, a read-only view of the mapped
        shard, or a new array when the sample crosses a shard boundary."""
        src = self._get(source)
        start, stop = self._bounds(source, idx)
        i = int(np.searchsorted(src.shard_starts, start, side="right")) - 1
        if stop <= src.shard_starts[i + 1]:
            offset = int(src.shard_starts[i])
            return self._reader(src, i).tokens(start - offset, stop - offset)
        out = np.empty(stop - start, dtype=self.dtype)
        self._copy(src, i, start, stop, out)
        return out

    def read_into(self, source: str, idx: int, out: np.ndarray) -> None:
        """Write sample `idx` of `source` into `out` (a 1-D array of seq_len + 1 elements, any integer dtype)."""
        src = self._get(source)
        start, stop = self._bounds(source, idx)
        i = int(np.searchsorted(src.shard_starts, start, side="right")) - 1
        self._copy(src, i, start, stop, out)

    def _bounds(self, source: str, idx: int) -> tuple[int, int]:
        n = self.num_samples(source)
        if not 0 <= idx < n:
            raise IndexError(f"sample {idx} out of range for source {source!r} of {n} samples")
        start = int(idx) * self.seq_len
        return start, start + self.seq_len + 1

    def _copy(self, src: _Source, i: int, start: int, stop: int, out: np.ndarray) -> None:
        pos = start
        while pos < stop:  # a short shard can make a sample span more than two
            offset, end = int(src.shard_starts[i]), min(stop, int(src.shard_starts[i + 1]))
            out[pos - start:end - start] = self._reader(src, i).tokens(pos - offset, end - offset)
            pos, i = end, i + 1

    def _reader(self, src: _Source, i: int) -> ShardReader:
        return self._opened(src, i)[0]

    def _opened(self, src: _Source, i: int) -> tuple[ShardReader, mmap.mmap | None]:
        key = (src.name, i)
        entry = self._open.get(key)
        if entry is not None:
            self._open.move_to_end(key)
            return entry
        path = self.folder / src.shard_paths[i]
        expected = int(src.shard_starts[i + 1] - src.shard_starts[i])
        try:
            reader = ShardReader(path, num_tokens=expected)
        except FileNotFoundError:
            raise InputError(f"{path}: shard of source {src.name!r} ({self.split}) listed in the manifest "
                             f"is missing") from None
        except ValueError as exc:
            raise ValueError(f"{exc}; the manifest lists {expected} tokens of {self.dtype.name}") from None
        if reader.dtype != self.dtype:
            raise ValueError(f"{path}: token dtype mismatch or truncated shard: {path.stat().st_size} bytes, but the "
                             f"manifest's {expected} tokens of {self.dtype.name} are {expected * self.dtype.itemsize} bytes")
        mapping = _mapping_of(reader.tokens(0, 0))
        advice = self.ACCESS[self.access]
        if advice is not None and mapping is not None:
            _advise(mapping, advice)
        self._open[key] = entry = (reader, mapping)
        while len(self._open) > self.max_open_shards:
            self._open.popitem(last=False)  # its mapping goes with the last view of it
        return entry

    def prefetch(self, source: str, idx: int) -> None:
        """Ask the kernel to start reading the pages of sample `idx` of `source` (returns at once)."""
        src = self._get(source)
        start, stop = self._bounds(source, idx)
        i = int(np.searchsorted(src.shard_starts, start, side="right")) - 1
        itemsize, page = self.dtype.itemsize, mmap.PAGESIZE
        while start < stop:
            offset, end = int(src.shard_starts[i]), min(stop, int(src.shard_starts[i + 1]))
            _, mapping = self._opened(src, i)
            if mapping is not None and hasattr(mmap, "MADV_WILLNEED"):
                first = (start - offset) * itemsize // page * page
                _advise(mapping, mmap.MADV_WILLNEED, first, (end - offset) * itemsize - first)
            start, i = end, i + 1

    def _get(self, source: str) -> _Source:
        try:
            return self._sources[source]
        except KeyError:
            raise KeyError(f"no source {source!r} in this dataset (it has {self.sources})") from None


def _advise(mapping: mmap.mmap, advice: int, *span: int) -> None:
    """madvise, as a hint: a kernel that refuses it changes nothing but speed."""
    try:
        mapping.madvise(advice, *span)
    except (OSError, ValueError):
        pass


def _mapping_of(view: np.ndarray) -> mmap.mmap | None:
    """The mmap object under a view of a numpy memmap (None for an empty shard or another kind of array)."""
    base = view
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    return base


# --------------------------------------------------------------------------------------------------
# mixing


def _largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    """Integer counts proportional to `shares` (which sum to 1) that add up to `total`."""
    quotas = shares * total
    counts = np.floor(quotas).astype(np.int64)
    left = total - int(counts.sum())
    if left > 0:
        # largest fractional part first; ties (and float noise) in source order
        order = sorted(range(len(shares)), key=lambda s: (-(quotas[s] - counts[s]), s))
        for s in order[:left]:
            counts[s] += 1
    assert counts.sum() == total, (counts, total)
    return counts


_MIX_1, _MIX_2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)  # splitmix64's finaliser


def _mix64(x: np.ndarray) -> np.ndarray:
    """A 64-bit avalanche mix (uint64, wrapping): each output bit depends on every input bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX_1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX_2
    return x ^ (x >> np.uint64(31))


def permute(values: np.ndarray, n: int, keys: np.ndarray) -> np.ndarray:
    """A keyed bijection of [0, n), applied to `values` (int64, each in [0, n)).

    A balanced Feistel network on the smallest even number of bits that holds n - 1 (a bijection of
    [0, 2**bits)), four rounds keyed by `keys` (uint64), and cycle walking: an output outside [0, n)
    goes through the network again until it lands inside, which keeps it a bijection of [0, n). The
    domain is under 4n, so the walk is short (fewer than 4 passes on average)."""
    values = np.asarray(values, dtype=np.int64)
    if n <= 1:
        return np.zeros_like(values)
    bits = max(2, int(n - 1).bit_length())
    half = np.uint64((bits + 1) // 2)
    mask = np.uint64((1 << int(half)) - 1)
    out = values.astype(np.uint64)
    todo = np.arange(out.size)
    flat = out.reshape(-1)
    while todo.size:
        x = flat[todo]
        left, right = x >> half, x & mask
        for key in keys:
            left, right = right, left ^ (_mix64(right ^ key) & mask)
        flat[todo] = (left << half) | right
        todo = todo[flat[todo] >= np.uint64(n)]
    return out.astype(np.int64)


class MixedSampleOrder:
    """The global sample order over a mix of sources (see the module docstring), computed per position:
    nothing of size samples_per_epoch is ever built, so it costs the same at any corpus size.

    `num_samples`: source -> packed samples it holds (mapping order = the order of the global ids:
    sample ``idx`` of the ``j``-th source has id ``sum(num_samples of sources before j) + idx``).
    `weights`: source -> weight, empty for proportional to num_samples; every source needs one.
    """

    def __init__(self, num_samples: Mapping[str, int], weights: Mapping[str, float] | None = None,
                 seed: int = 1234) -> None:
        self.sources = list(num_samples)
        if not self.sources:
            raise ValueError("no sources to mix")
        self.num_samples = np.array([int(num_samples[s]) for s in self.sources], dtype=np.int64)
        self.offsets = np.zeros(len(self.sources) + 1, dtype=np.int64)
        np.cumsum(self.num_samples, out=self.offsets[1:])
        self.samples_per_epoch = int(self.offsets[-1])
        self.weights = self._checked_weights(dict(weights or {}))
        w = np.array([self.weights[s] for s in self.sources], dtype=np.float64)
        self.counts = _largest_remainder(w / w.sum(), self.samples_per_epoch)
        # an epoch's slots: source s owns [count_starts[s], count_starts[s + 1])
        self.count_starts = np.zeros(len(self.sources) + 1, dtype=np.int64)
        np.cumsum(self.counts, out=self.count_starts[1:])
        self.seed = int(seed)

    def _checked_weights(self, weights: dict[str, float]) -> dict[str, float]:
        if unknown := [s for s in weights if s not in self.sources]:
            raise ValueError(f"weights: unknown source {unknown[0]!r} (the sources are {self.sources})")
        for s, n in zip(self.sources, self.num_samples):
            if n == 0 and (not weights or (s in weights and weights[s] != 0)):
                raise ValueError(f"source {s!r} holds no packed sample (fewer tokens than seq_len + 1): lower "
                                 f"seq_len, or leave it out with weight 0 in weights")
        if not weights:
            weights = {s: float(n) for s, n in zip(self.sources, self.num_samples)}
        elif missing := [s for s in self.sources if s not in weights]:
            raise ValueError(f"weights: no weight for source {missing[0]!r}: give every source one "
                             f"(0 leaves it out); the sources are {self.sources}")
        for s, w in weights.items():
            if not isinstance(w, numbers.Real) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
                raise ValueError(f"weights.{s}: a weight must be a finite number >= 0, got {w!r}")
        if not any(weights.values()):
            raise ValueError(f"weights: every weight is 0 (sources {self.sources})")
        return {s: float(weights[s]) for s in self.sources}

    @property
    def shares(self) -> dict[str, float]:
        """Each source's share of an epoch, as drawn (counts / samples_per_epoch)."""
        return {s: int(c) / self.samples_per_epoch for s, c in zip(self.sources, self.counts)}

    def reseed(self, seed: int) -> None:
        self.seed = int(seed)

    def _keys(self, epoch: int, stream: int) -> np.ndarray:
        """Four round keys for epoch `epoch`: stream 0 shuffles the epoch, stream 1 + s draws source s's extras."""
        return np.random.SeedSequence([self.seed, epoch, stream]).generate_state(4, dtype=np.uint64)

    def global_ids(self, positions: np.ndarray) -> np.ndarray:
        """Global sample ids (int64) at global positions (across epochs).

        Position p of epoch e is slot ``permute(p)`` of the epoch; the slots of source s are its full
        passes over its samples (``count_s // n_s`` of them, in order) and then ``count_s % n_s`` extra
        slots, the first values of a permutation of its samples: distinct samples, drawn anew each epoch."""
        positions = np.asarray(positions, dtype=np.int64)
        epochs, within = np.divmod(positions, self.samples_per_epoch)
        out = np.empty(positions.shape, dtype=np.int64)
        for epoch in np.unique(epochs).tolist():
            at = epochs == epoch
            slots = permute(within[at], self.samples_per_epoch, self._keys(epoch, 0))
            source = np.searchsorted(self.count_starts, slots, side="right") - 1
            j = slots - self.count_starts[source]
            n = self.num_samples[source]
            full = (self.counts[source] // np.maximum(n, 1)) * n
            idx = np.where(j < full, j % np.maximum(n, 1), 0)
            for s in np.unique(source[j >= full]).tolist():
                extra = (source == s) & (j >= full)
                idx[extra] = permute(j[extra] - full[extra], int(self.num_samples[s]), self._keys(epoch, 1 + s))
            out[at] = self.offsets[source] + idx
        return out

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Every global sample id of epoch `epoch`, in order: for inspection and tests on small corpora (the
        loader never builds it)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        start = epoch * self.samples_per_epoch
        return self.global_ids(np.arange(start, start + self.samples_per_epoch, dtype=np.int64))

    def decode(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index into `sources`, sample index within that source) of global ids."""
        ids = np.asarray(ids, dtype=np.int64)
        source = np.searchsorted(self.offsets, ids, side="right") - 1
        return source, ids - self.offsets[source]

    def source_counts(self, start: int, stop: int, chunk: int = 1 << 20) -> np.ndarray:
        """Samples (int64, per source) at the global positions [start, stop): a whole epoch adds `counts`,
        a part of one is counted from its slots (it costs O(stop - start) there, in chunks)."""
        out = np.zeros(len(self.sources), dtype=np.int64)
        pos = int(start)
        while pos < stop:
            epoch, within = divmod(pos, self.samples_per_epoch)
            end = min(int(stop), (epoch + 1) * self.samples_per_epoch)
            if within == 0 and end - pos == self.samples_per_epoch:
                out += self.counts
            else:
                keys = self._keys(epoch, 0)
                for first in range(within, within + end - pos, chunk):
                    last = min(first + chunk, within + end - pos)
                    slots = permute(np.arange(first, last, dtype=np.int64), self.samples_per_epoch, keys)
                    source = np.searchsorted(self.count_starts, slots, side="right") - 1
                    out += np.bincount(source, minlength=len(self.sources))
            pos = end
        return out

    def samples_at(self, positions: np.ndarray) -> list[tuple[str, int]]:
        """(source, sample index) at global positions."""
        source, idx = self.decode(self.global_ids(positions))
        return [(self.sources[s], int(i)) for s, i in zip(source.tolist(), idx.tolist())]


# --------------------------------------------------------------------------------------------------
# training batches


def _as_tensors(batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.from_numpy(batch)
    return t[:, :-1].contiguous(), t[:, 1:].contiguous()


class TrainBatches:
    """Endless micro-batches ``(inputs, targets)``, LongTensors ``[micro_batch_size, seq_len]``, of one rank.

    Every `next()` consumes ``micro_batch_size * dp_world`` global positions (see the module docstring)
    and yields this rank's share of them. With `global_batch_size` it checks that a global step is a
    whole number of micro-steps and sets `grad_accum`. Iterate it from one place only: the iterator is
    the loader itself. `prefetch`: micro-batches whose pages the kernel is asked to read ahead (0: none).
    """

    def __init__(self, dataset: PackedShardDataset, order: MixedSampleOrder, micro_batch_size: int,
                 dp_rank: int = 0, dp_world: int = 1, global_batch_size: int | None = None,
                 prefetch: int = 4) -> None:
        if micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
        if dp_world < 1 or not 0 <= dp_rank < dp_world:
            raise ValueError(f"dp_rank must be in [0, dp_world), got dp_rank={dp_rank}, dp_world={dp_world}")
        for source, n in zip(order.sources, order.num_samples.tolist()):
            if source not in dataset.sources or dataset.num_samples(source) != n:
                raise ValueError(f"the sample order's source {source!r} ({n} samples) does not match the dataset")
        self.dataset = dataset
        self.order = order
        self.micro_batch_size = micro_batch_size
        self.dp_rank = dp_rank
        self.dp_world = dp_world
        self.samples_per_micro_step = micro_batch_size * dp_world
        self.grad_accum: int | None = None
        self.global_batch_size = global_batch_size
        if global_batch_size is not None:
            if global_batch_size < 1 or global_batch_size % self.samples_per_micro_step:
                raise ValueError(f"global_batch_size {global_batch_size} is not a multiple of micro_batch_size * "
                                 f"dp_world = {micro_batch_size} * {dp_world}")
            self.grad_accum = global_batch_size // self.samples_per_micro_step
        self.prefetch = max(int(prefetch), 0)
        self._prefetched_to: int | None = None  # start of the first micro-step not prefetched yet
        self.samples_consumed = 0
        self.last_sources: np.ndarray | None = None  # the source index (into order.sources) of each row read last

    @property
    def seq_len(self) -> int:
        return self.dataset.seq_len

    @property
    def samples_per_epoch(self) -> int:
        return self.order.samples_per_epoch

    @property
    def epoch(self) -> int:
        """The epoch the next sample comes from."""
        return self.samples_consumed // self.order.samples_per_epoch

    @property
    def tokens_consumed(self) -> int:
        """Global target tokens consumed (samples_consumed * seq_len)."""
        return self.samples_consumed * self.seq_len

    def advance(self, global_samples: int) -> None:
        """Count `global_samples` more global positions as consumed (all ranks together); `next()` does it."""
        if global_samples < 0:
            raise ValueError(f"cannot advance by {global_samples} samples")
        self.samples_consumed += int(global_samples)

    def _positions(self, start: int | None = None) -> np.ndarray:
        start = self.samples_consumed if start is None else start
        return start + self.dp_rank + self.dp_world * np.arange(self.micro_batch_size, dtype=np.int64)

    def _prefetch_ahead(self) -> None:
        """Prefetch this rank's samples of the micro-steps up to `prefetch` ahead (the current one included)."""
        step, now = self.samples_per_micro_step, self.samples_consumed
        ahead = self._prefetched_to
        if ahead is None or ahead < now or (ahead - now) % step:  # first call, or moved by advance/load
            ahead = now
        while ahead < now + self.prefetch * step:
            source, idx = self.order.decode(self.order.global_ids(self._positions(ahead)))
            for s, i in zip(source.tolist(), idx.tolist()):
                self.dataset.prefetch(self.order.sources[s], i)
            ahead += step
        self._prefetched_to = ahead

    def next_samples(self) -> list[tuple[str, int]]:
        """The (source, sample index) pairs the next `next()` yields on this rank, in order."""
        return self.order.samples_at(self._positions())

    def __iter__(self) -> TrainBatches:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _as_tensors(self.read_batch())

    def read_batch(self, out: np.ndarray | None = None) -> np.ndarray:
        """The next micro-batch as one int64 array ``[micro_batch_size, seq_len + 1]`` (each row a sample:
        inputs ``[:-1]``, targets ``[1:]``), read into `out` when given (pinned host memory, say)."""
        self._prefetch_ahead()
        source, idx = self.order.decode(self.order.global_ids(self._positions()))
        shape = (self.micro_batch_size, self.seq_len + 1)
        batch = np.empty(shape, dtype=np.int64) if out is None else out
        if batch.shape != shape or batch.dtype != np.int64:
            raise ValueError(f"read_batch: out must be int64 {shape}, got {batch.dtype} {batch.shape}")
        names = self.order.sources
        for row, (s, i) in enumerate(zip(source.tolist(), idx.tolist())):
            self.dataset.read_into(names[s], i, batch[row])
        self.last_sources = source
        self.advance(self.samples_per_micro_step)
        return batch

    def state_dict(self) -> dict[str, int]:
        """``{"seed", "epoch", "samples_consumed"}``: the same on every rank, plain ints."""
        return {"seed": self.order.seed, "epoch": self.epoch, "samples_consumed": self.samples_consumed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Continue where the loader that wrote `state` stopped, on any number of ranks (the state's seed wins)."""
        if missing := [k for k in STATE_KEYS if k not in state]:
            raise ValueError(f"data loader state: missing key {missing[0]!r} (expected {list(STATE_KEYS)})")
        if unknown := [k for k in state if k not in STATE_KEYS]:
            raise ValueError(f"data loader state: unknown key {unknown[0]!r} (expected {list(STATE_KEYS)})")
        seed, epoch, consumed = (int(state[k]) for k in STATE_KEYS)
        if consumed < 0:
            raise ValueError(f"data loader state: samples_consumed must be >= 0, got {consumed}")
        if consumed // self.order.samples_per_epoch != epoch:
            raise ValueError(f"data loader state: samples_consumed {consumed} is in epoch "
                             f"{consumed // self.order.samples_per_epoch} of {self.order.samples_per_epoch} samples, "
                             f"but the state says epoch {epoch}: the train sources or seq_len changed since it "
                             f"was saved")
        if seed != self.order.seed:
            warnings.warn(f"data loader state: seed {seed} replaces the configured seed {self.order.seed}",
                          stacklevel=2)
            self.order.reseed(seed)
        self.samples_consumed = consumed


def build_train_batches(cfg: DataConfig, micro_batch_size: int, dp_rank: int = 0, dp_world: int = 1,
                        global_batch_size: int | None = None, prefetch: int = 4,
                        manifest: dict | None = None) -> TrainBatches:
    """The train loader of `cfg` (split "train", mixed by `cfg.weights`) for one rank; `manifest`: the folder's
    manifest already read (else it is read here)."""
    dataset = PackedShardDataset(cfg.path, "train", cfg.seq_len, access="random", manifest=manifest)
    order = MixedSampleOrder(dataset.samples_per_source, dict(cfg.weights), cfg.seed)
    return TrainBatches(dataset, order, micro_batch_size, dp_rank, dp_world, global_batch_size, prefetch)


# --------------------------------------------------------------------------------------------------
# validation


class ValidationBatches:
    """Batches ``(inputs, targets)`` of up to `batch_size` samples over every packed sample of the
    selected sources once, sequentially; re-iterable. See the module docstring for the rank split."""

    def __init__(self, dataset: PackedShardDataset, batch_size: int, source: str | None = None,
                 dp_rank: int = 0, dp_world: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if dp_world < 1 or not 0 <= dp_rank < dp_world:
            raise ValueError(f"dp_rank must be in [0, dp_world), got dp_rank={dp_rank}, dp_world={dp_world}")
        self.dataset = dataset
        self.sources = dataset.sources if source is None else [source]
        for s in self.sources:
            dataset.check_samples(s)  # also raises for an unknown source, naming it
        counts = [dataset.num_samples(s) for s in self.sources]
        self._offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=self._offsets[1:])
        self.total_samples = int(self._offsets[-1])
        self.batch_size = batch_size
        self.dp_rank = dp_rank
        self.dp_world = dp_world
        self.num_samples = len(range(dp_rank, self.total_samples, dp_world))  # this rank's

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    @property
    def fewest_batches_of_any_rank(self) -> int:
        """`len()` on the rank with the fewest samples (the last one): every rank knows it without a collective."""
        last = len(range(self.dp_world - 1, self.total_samples, self.dp_world))
        return -(-last // self.batch_size)

    def samples(self) -> Iterator[tuple[str, int]]:
        """This rank's (source, sample index) pairs, in order."""
        for k in range(self.dp_rank, self.total_samples, self.dp_world):
            s = int(np.searchsorted(self._offsets, k, side="right")) - 1
            yield self.sources[s], k - int(self._offsets[s])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seq = self.dataset.seq_len
        pending: list[tuple[str, int]] = []
        for item in self.samples():
            pending.append(item)
            if len(pending) == self.batch_size:
                yield self._batch(pending, seq)
                pending = []
        if pending:
            yield self._batch(pending, seq)

    def _batch(self, items: list[tuple[str, int]], seq: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch = np.empty((len(items), seq + 1), dtype=np.int64)
        for row, (source, idx) in enumerate(items):
            self.dataset.read_into(source, idx, batch[row])
        return _as_tensors(batch)


def validation_batches(path: str | os.PathLike[str], split: str = "val", seq_len: int = 256, batch_size: int = 8,
                       source: str | None = None, dp_rank: int = 0, dp_world: int = 1,
                       manifest: dict | None = None) -> ValidationBatches:
    """Evaluation batches over split `split` of the shard folder `path`: every packed sample of `source`
    (default: of every source, one after the other in name order) once, in order, sharded across ranks.
    Re-iterable: build them once and evaluate as often as needed."""
    dataset = PackedShardDataset(path, split, seq_len, sources=None if source is None else [source],
                                 access="sequential", manifest=manifest)
    return ValidationBatches(dataset, batch_size, source, dp_rank, dp_world)

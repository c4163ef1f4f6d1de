"""The tokenizer: a byte-level BPE trained on the cleaned corpus, or a given local tokenizer.json.

Either way it is saved next to the shards in Hugging Face format (tokenizer.json plus the two small
JSON files `PreTrainedTokenizerFast.from_pretrained` reads), so the trainer and an exported model
use exactly the tokenizer the shards were made with.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from shard_format import storage
from shard_format.errors import ConfigError
from shard_format.storage import StorageOptions

TOKENIZER_FILE = "tokenizer.json"


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int, eos_token: str, show_progress: bool = False) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[eos_token],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def load_tokenizer(path: str | os.PathLike, eos_token: str) -> Tokenizer:
    """Load a tokenizer.json (a file, or a folder holding one); it must know `eos_token`."""
    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception with the parse error
        raise ConfigError(f"tokenizer.path: cannot load {path}: {exc}") from exc
    if tokenizer.token_to_id(eos_token) is None:
        raise ConfigError(f"tokenizer.eos_token: {eos_token!r} is not in the vocabulary of {path}")
    return tokenizer


def save_hf_tokenizer(tokenizer: Tokenizer, folder: str | os.PathLike, eos_token: str,
                      storage_options: StorageOptions = None) -> Path | str:
    """Save in Hugging Face format to a local folder or a URL, each file atomically; returns the path of
    tokenizer.json (a Path, or the URL)."""
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": eos_token,
        "eos_token": eos_token,
        "unk_token": eos_token,
        "model_max_length": 1_000_000_000,
        "clean_up_tokenization_spaces": False,
    }
    special = {"bos_token": eos_token, "eos_token": eos_token, "unk_token": eos_token}
    files = {
        TOKENIZER_FILE: tokenizer.to_str(pretty=True),  # what Tokenizer.save writes
        "tokenizer_config.json": json.dumps(config, indent=2, sort_keys=True) + "\n",
        "special_tokens_map.json": json.dumps(special, indent=2, sort_keys=True) + "\n",
    }
    for name, text in files.items():
        storage.write_text_atomic(storage.join(folder, name), text, storage_options)
    path = storage.join(folder, TOKENIZER_FILE)
    return path if storage.is_remote(path) else Path(path)

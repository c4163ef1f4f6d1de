"""The console a person reads: formatted numbers, one line per log step, library noise dropped."""

import os
import warnings

import torch

from monitoring.console import human_bytes, human_count, percent
from pretrain.engine import quiet_deepspeed_start
from pretrain.metrics import format_console


def test_a_log_step_reads_like_prose():
    metrics = {"train/loss": 6.21873, "lr": 0.0017, "train/grad_norm": 0.4321, "speed/tokens_per_s": 4578.2117,
               "speed/mfu": 0.52149, "train/tokens": 1_234_567_890, "memory/gpu_max_allocated_gb": 61.234,
               "data/web/tokens": 123, "train/web/loss": 6.0}
    assert format_console(120, metrics) == ("step    120 | loss 6.219 | lr 1.7e-03 | grad norm 0.43 | tokens/s 4,578 | "
                                            "mfu 52.1% | tokens 1.2B | gpu mem 61.2 GiB")


def test_unknown_values_read_na_and_evaluations_name_their_sources():
    assert format_console(3, {"train/loss": None, "speed/mfu": None}) == "step      3 | loss n/a | mfu n/a"
    line = format_console(8, {"val/loss": 7.5004, "val/books/loss": 7.4175, "val/books/ppl": 1664.8, "val/web/loss": 7.55})
    assert line == "step      8 | val loss 7.500 | books 7.418 | web 7.550"
    assert format_console(8, {"checkpoint/stall_s": 0.5}) is None  # nothing the console shows: no line


def test_human_numbers():
    assert [human_count(n) for n in (0, 999, 9_999, 10_240, 1_500_000, 3.4e9, 1e13, 2.5e16)] == [
        "0", "999", "9,999", "10.2K", "1.5M", "3.4B", "10.0T", "25000.0T"]
    assert [human_bytes(n) for n in (None, 999, 1_000, 12.34e12)] == ["-", "999 B", "1.0 KB", "12.3 TB"]
    assert percent(0.5214) == "52.1%"


def test_deepspeed_noise_is_dropped_and_other_warnings_stay(monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "set, so that the test's end restores its absence")
    monkeypatch.delenv("DS_ACCELERATOR")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_deepspeed_start()
        warnings.warn("`torch.distributed.all_gather_into_tensor` is deprecated. Please use ...", FutureWarning)
        warnings.warn("our own deprecation", FutureWarning)
        warnings.warn("`torch.distributed.all_gather_into_tensor` is deprecated", UserWarning)  # not the one we drop
    assert [str(w.message) for w in caught] == ["our own deprecation", "`torch.distributed.all_gather_into_tensor` is deprecated"]
    assert os.environ.get("DS_ACCELERATOR") == (None if torch.cuda.is_available() else "cpu")

"""The background checkpoint writer: a save is a snapshot taken when it is requested, a failed write
is raised on the training thread, and a checkpoint is only marked complete once written."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from pretrain.checkpoint_writer import BackgroundWriter, to_host


def test_a_save_is_the_state_when_it_was_requested(tmp_path):
    writer = BackgroundWriter()
    weight = torch.arange(6, dtype=torch.float32)
    tied = weight.view(6)
    state = OrderedDict(module=OrderedDict(a=weight, b=tied), step=3, groups=[{"lr": 0.1, "params": [weight]}])
    writer.save(state, str(tmp_path / "state.pt"))
    weight.add_(100)  # training goes on while the file is written
    writer.wait()
    saved = torch.load(tmp_path / "state.pt", weights_only=False)
    assert torch.equal(saved["module"]["a"], torch.arange(6, dtype=torch.float32))
    assert saved["step"] == 3 and saved["groups"][0]["lr"] == 0.1
    assert isinstance(saved["module"], OrderedDict)
    # tensors that shared storage still do
    assert saved["module"]["a"].untyped_storage().data_ptr() == saved["module"]["b"].untyped_storage().data_ptr()


def test_to_host_copies_every_tensor():
    t = torch.ones(3)
    copied = to_host({"x": t, "y": (t, 2)})
    assert copied["x"] is not t and torch.equal(copied["x"], t) and copied["y"][0] is copied["x"]


def test_a_failed_write_is_raised_by_wait_and_nothing_after_it_is_written(tmp_path):
    writer = BackgroundWriter()
    writer.save({"x": torch.zeros(2)}, str(tmp_path / "missing-folder" / "a.pt"))
    writer.save({"x": torch.zeros(2)}, str(tmp_path / "b.pt"))
    with pytest.raises(RuntimeError, match="writing a checkpoint failed"):
        writer.wait()
    assert not (tmp_path / "b.pt").exists()
    writer.save({"x": torch.zeros(2)}, str(tmp_path / "c.pt"))  # the writer goes on for the next save
    writer.wait()
    assert (tmp_path / "c.pt").exists()

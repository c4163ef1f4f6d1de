"""shard_format.atomic: a file is replaced whole or not at all, and no temporary file is left behind."""

import pytest

from shard_format.atomic import AtomicFile, publish_staged, write_bytes_atomic, write_text_atomic


def test_writes_pieces_and_replaces_the_old_file(tmp_path):
    path = tmp_path / "sub" / "x.bin"
    assert write_bytes_atomic(path, b"ab", memoryview(b"cd")) == path
    write_text_atomic(path, "ünï")
    assert path.read_text(encoding="utf-8") == "ünï"
    assert [p.name for p in path.parent.iterdir()] == ["x.bin"]


def test_an_error_inside_the_block_keeps_the_old_file(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), AtomicFile(path) as fh:
        fh.write(b"half")
        assert fh.tmp_path.parent == tmp_path and not fh.tmp_path.name.endswith(".json")
        raise RuntimeError
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_files_published_in_order_with_one_folder_sync(tmp_path):
    first, second = AtomicFile(tmp_path / "a"), AtomicFile(tmp_path / "b")
    first.write(b"1")
    second.write(b"2")
    first.seal()
    second.seal()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == []
    first.publish(sync_folder=False)
    second.publish()
    assert (tmp_path / "a").read_bytes() == b"1" and (tmp_path / "b").read_bytes() == b"2"


def test_a_staged_file_written_in_several_sessions_replaces_the_old_one(tmp_path):
    staged, path = tmp_path / "x.bin.tmp", tmp_path / "x.bin"
    path.write_bytes(b"old")
    for piece in (b"a", b"b"):
        with open(staged, "ab") as fh:
            fh.write(piece)
    publish_staged(staged, path)
    assert path.read_bytes() == b"ab" and not staged.exists()

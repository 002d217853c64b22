"""pipeline/common/files.py: a small file is replaced whole or not at all; an output folder is
made, or refused with the reason."""

from __future__ import annotations

import os

import pytest

from pipeline.common import files
from pipeline.common.files import TMP_MARK, temp_name, write_text_atomic


def test_writes_then_replaces_whole_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "record.json"
    write_text_atomic(path, '{"a": 1}')
    write_text_atomic(path, '{"a": 2}')
    assert path.read_text() == '{"a": 2}'
    assert os.listdir(tmp_path) == ["record.json"]
    assert temp_name(path) == str(tmp_path / f".record.json{TMP_MARK}{os.getpid()}")


def test_a_write_that_fails_midway_leaves_the_old_content_and_no_temporary_file(tmp_path):
    path = tmp_path / "report.md"
    write_text_atomic(path, "old report")
    # A lone surrogate cannot be encoded: the write fails after the temporary file was opened.
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "new report, then \ud800")
    assert path.read_text() == "old report"
    assert os.listdir(tmp_path) == ["report.md"]


@pytest.mark.parametrize("durable", [False, True])
def test_durable_writes_flush_the_file_and_its_directory(tmp_path, monkeypatch, durable):
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(files.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    write_text_atomic(tmp_path / "pointer.json", "{}", durable=durable)
    assert len(synced) == (2 if durable else 0)  # the file before the rename, the directory after


def test_an_output_folder_is_made_or_refused_with_the_reason(tmp_path):
    from pipeline.common.config import ConfigError
    from pipeline.common.files import make_output_dir

    make_output_dir(tmp_path / "a" / "b", "--out")
    assert (tmp_path / "a" / "b").is_dir()
    make_output_dir(tmp_path / "a" / "b", "--out")  # there already: fine
    (tmp_path / "file").write_text("")
    with pytest.raises(
        ConfigError, match=rf"^--out {tmp_path / 'file' / 'x'}: {tmp_path / 'file'} is a file, not a folder$"
    ):
        make_output_dir(tmp_path / "file" / "x", "--out")
    with pytest.raises(ConfigError, match=rf"^--out {tmp_path / 'file'}: {tmp_path / 'file'} is a file, not a folder$"):
        make_output_dir(tmp_path / "file", "--out")

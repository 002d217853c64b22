"""A killed job's leftovers (pipeline/common/leftovers.py): the next embedded cluster stops the
processes a dead driver recorded, and nothing else, with real processes standing in for them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import psutil

import pipeline.common.leftovers as leftovers
from pipeline.common.leftovers import EmbeddedClusterRecord, clean_leftovers


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])


def _identity(proc: subprocess.Popen) -> list[float]:
    return [proc.pid, psutil.Process(proc.pid).create_time()]


def test_the_next_job_stops_what_a_killed_driver_left(tmp_path):
    driver, left, reused = _sleeper(), _sleeper(), _sleeper()
    alive_driver, its_child = _sleeper(), _sleeper()
    try:
        dead = _identity(driver)
        driver.kill()
        driver.wait()
        # The dead driver's record: one process still runs, one pid now belongs to another process.
        reused_pid_other_start = [reused.pid, psutil.Process(reused.pid).create_time() - 100.0]
        (tmp_path / "1.json").write_text(
            json.dumps({"driver": dead, "processes": [_identity(left), reused_pid_other_start]})
        )
        # A job running now: its processes are its own.
        (tmp_path / "2.json").write_text(
            json.dumps({"driver": _identity(alive_driver), "processes": [_identity(its_child)]})
        )

        said: list[str] = []
        assert clean_leftovers(said.append, record_dir=tmp_path) == 1
        assert left.wait(timeout=10) == -9  # SIGKILLed
        assert reused.poll() is None and its_child.poll() is None and alive_driver.poll() is None
        assert said == [f"[ray] stopped 1 processes left by an earlier job killed while it ran (pids {left.pid})"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["2.json"]  # the dead one's record is gone
    finally:
        for p in (driver, left, reused, alive_driver, its_child):
            p.kill()
            p.wait()


def test_a_driver_records_what_it_started_and_removes_the_record(tmp_path):
    child = _sleeper()
    try:
        record = EmbeddedClusterRecord(record_dir=tmp_path)
        written = json.loads(record.path.read_text())
        assert written["driver"][0] == psutil.Process().pid
        assert _identity(child) in written["processes"]
        record.close()
        assert not record.path.exists()
    finally:
        child.kill()
        child.wait()


def test_a_record_being_written_when_the_driver_closes_it_is_not_left_behind(tmp_path, monkeypatch):
    record = EmbeddedClusterRecord(record_dir=tmp_path)
    writing, go_on = threading.Event(), threading.Event()
    write = leftovers._write

    def slow_write(path, content):
        writing.set()
        go_on.wait(30)
        write(path, content)

    monkeypatch.setattr(leftovers, "_write", slow_write)
    updater = threading.Thread(target=record.update)
    updater.start()
    assert writing.wait(30)  # an update is between reading the processes and writing the record
    closer = threading.Thread(target=record.close)
    closer.start()
    closer.join(0.5)  # let close() remove the record now, if it does not wait for the write
    go_on.set()
    updater.join(30)
    closer.join(30)
    assert not updater.is_alive() and not closer.is_alive()
    assert not record.path.exists()

"""Where a model registry lives: a local (or mounted POSIX) directory, or a URL on any fsspec
filesystem (s3://, gs://, abfs://, hdfs://, memory://, file://; the cloud ones need their fsspec
package, e.g. s3fs). The registry (pipeline/registry/versions.py) uses only the operations below, and
its protocol relies only on what both kinds guarantee:

    operation          local path                                  fsspec URL (object stores)
    replace a small    temp file, fsync, os.replace                one put of the whole object
      JSON file
    commit a version   written under .staging/, fsynced, renamed   uploaded file by file, then its
                       into versions/ in one step                  version.json last: a version
                                                                   without it is not listed
    exclusive create   O_CREAT|O_EXCL                              open(mode="xb"): If-None-Match /
      (the lock)                                                   generation-match precondition

A reader therefore sees a whole version or none on both. Versions are never modified once
committed, so a downloaded copy of one (`fetch`) stays valid.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
import tempfile
import time
from collections.abc import Callable

from pipeline.common.files import fsync_path, write_text_atomic


class RegistryError(ValueError):
    pass


def is_url(path: str) -> bool:
    return "://" in path


def fsync_tree(root: str) -> None:
    """Flush every file and directory under `root`, so that a rename published after it never
    names data still only in the page cache (a power loss would otherwise leave empty files)."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            fsync_path(os.path.join(dirpath, name))
        fsync_path(dirpath, directory=True)


class LocalStore:
    """A directory on this machine (or a mount with atomic rename: NFS, most FUSE)."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def join(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def read_text(self, path: str) -> str | None:
        try:
            with open(path) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def write_json(self, path: str, data: dict) -> None:
        write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True), durable=True)

    def isfile(self, path: str) -> bool:
        return os.path.isfile(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path) if os.path.isdir(path) else []

    def staging_dir(self, name: str) -> str:
        """A fresh local directory to write a version into, on the registry's filesystem (so
        that the commit is one rename)."""
        path = self.join(".staging", name)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        return path

    def commit(
        self, staged: str, final: str, marker: str, marker_text: str, before_commit: Callable[[], None] | None = None
    ) -> None:
        with open(os.path.join(staged, marker), "w") as f:
            f.write(marker_text)
        fsync_tree(staged)
        if before_commit is not None:
            before_commit()
        os.rename(staged, final)
        fsync_path(os.path.dirname(final), directory=True)

    def uncommit_and_remove(self, path: str, marker: str) -> None:
        """Take a committed version out of the listing in one step, then delete it."""
        aside = self.join(".staging", f"{os.path.basename(path)}.interrupted")
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        os.rename(path, aside)
        fsync_path(os.path.dirname(path), directory=True)
        shutil.rmtree(aside, ignore_errors=True)

    def remove(self, path: str) -> None:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.unlink(path)

    def fetch(self, path: str, dest: str) -> str:
        return path  # already readable in place

    def lock(self, path: str, stale_after_s: float, log: Callable[[str], None]):
        from pipeline.registry.lock import FileLock

        return FileLock(path, stale_after_s, log=log)


class FsspecStore:
    """A registry at a URL of any fsspec filesystem. Uploads go straight to their final place;
    the version.json written last is the commit (object stores have no atomic rename)."""

    def __init__(self, url: str) -> None:
        import fsspec

        try:
            self.fs, _ = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as e:  # "Install s3fs to access S3", "Protocol not known"
            raise RegistryError(f"registry {url}: cannot open its filesystem: {e}") from None
        self.root = url.rstrip("/")

    def join(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def makedirs(self, path: str) -> None:
        self.fs.makedirs(path, exist_ok=True)  # a no-op on object stores, needed by local ones

    def read_text(self, path: str) -> str | None:
        try:
            return self.fs.cat_file(path).decode()
        except FileNotFoundError:
            return None

    def write_json(self, path: str, data: dict) -> None:
        self.fs.pipe_file(path, json.dumps(data, indent=2, sort_keys=True).encode())

    def isfile(self, path: str) -> bool:
        return self.fs.isfile(path)

    def isdir(self, path: str) -> bool:
        return self.fs.isdir(path)

    def listdir(self, path: str) -> list[str]:
        try:
            entries = self.fs.ls(path, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted({posixpath.basename(e.rstrip("/")) for e in entries})

    def staging_dir(self, name: str) -> str:
        return tempfile.mkdtemp(prefix=f"ple-registry-{name}-")

    def commit(
        self, staged: str, final: str, marker: str, marker_text: str, before_commit: Callable[[], None] | None = None
    ) -> None:
        try:
            for dirpath, _, files in os.walk(staged):
                rel = os.path.relpath(dirpath, staged)
                target_dir = posixpath.join(final, *([] if rel == "." else rel.split(os.sep)))
                self.makedirs(target_dir)
                for name in files:
                    self.fs.put_file(os.path.join(dirpath, name), posixpath.join(target_dir, name))
            if before_commit is not None:
                before_commit()
            self.fs.pipe_file(posixpath.join(final, marker), marker_text.encode())
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def uncommit_and_remove(self, path: str, marker: str) -> None:
        self.fs.rm_file(posixpath.join(path, marker))  # unlisted from here on
        self.remove(path)

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=True)

    def fetch(self, path: str, dest: str) -> str:
        """Download the tree at `path` into the local directory `dest` (replaced whole: it
        appears only once complete)."""
        shutil.rmtree(dest, ignore_errors=True)
        tmp = f"{dest}.part-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        prefix = self.fs._strip_protocol(path).rstrip("/")  # find() returns protocol-less paths
        for remote in self.fs.find(path):
            rel = self.fs._strip_protocol(remote)[len(prefix) :].lstrip("/")
            local = os.path.join(tmp, *rel.split("/"))
            os.makedirs(os.path.dirname(local), exist_ok=True)
            self.fs.get_file(remote, local)
        os.replace(tmp, dest)
        return dest

    def lock(self, path: str, stale_after_s: float, log: Callable[[str], None]):
        from pipeline.registry.lock import FsspecLock

        return FsspecLock(self.fs, path, stale_after_s, log=log)


def open_store(root: str):
    return FsspecStore(root) if is_url(root) else LocalStore(root)


def fetched_copy(url: str, what: str, cache_root: str | None = None) -> str:
    """A local copy of the tree at `url` (an export or checkpoint of a committed, hence
    immutable, registry version), downloaded once per machine into a cache and then reused.
    Safe for concurrent callers (scoring actors on one node): each downloads to its own
    temporary name; the first rename wins and the others use its copy."""
    import hashlib

    cache_root = (
        cache_root
        or os.environ.get("PLE_REGISTRY_CACHE")
        or os.path.join(os.path.expanduser("~"), ".cache", "ple-pipeline", "registry")
    )
    dest = os.path.join(cache_root, hashlib.sha1(url.encode()).hexdigest()[:16], what)
    if os.path.isdir(dest):
        return dest
    tmp = FsspecStore(url).fetch(url, f"{dest}.part-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(tmp, dest)
    except OSError:  # another process renamed its complete copy first
        shutil.rmtree(tmp, ignore_errors=True)
    return dest

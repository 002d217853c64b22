"""Model registry on a filesystem path: every model the daily retrain produced, and which one
is in production.

    <root>/production              pointer (JSON): {"version": "v0003", "updated": ..., "history": [...]}
    <root>/versions/v0003/
        version.json               status (accepted/rejected + reason), parent, days, metrics, gate,
                                   code version, warm start, training history
        export/                    the exported model (weights.pt, model.json): what scoring loads
        checkpoint/                the sharded training checkpoint (DCP + extra.json + plan.json):
                                   the next day's warm start (weights and optimizer state)
        config.yaml                the training job's config as run (days and warm start included)
        feature_spec.yaml          the feature spec it was trained with
    <root>/.staging/               versions being written (never part of the registry)
    <root>/.retrain.lock           held by the running retrain (pipeline/lock.py)

Atomicity (local or mounted POSIX path: rename and os.replace are atomic there):
  * a version is written completely under .staging/, fsynced, then renamed into versions/;
    a reader sees a whole version or none;
  * the production pointer is written to a temporary file and switched with os.replace;
  * a rejected candidate is committed by its one rename; an accepted one by the pointer switch
    that follows it. A run killed between the two leaves an accepted version that the pointer's
    history never names: `list` shows it as "incomplete", nothing resolves it, and `recover()`
    (first thing of the next retrain, under the lock) deletes it, so the registry is back to
    exactly its previous files.
Nothing ever modifies a committed version; only `recover()` deletes, and only that case.

Remote filesystems: object stores (S3, GCS) have no atomic rename. There a version would be
written under a unique prefix with a completion marker written last, the pointer would be one
object replaced with a conditional write (generation/ETag precondition), and the lock a
conditional create. Not implemented: use a local or mounted (NFS, FUSE with atomic rename) path.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

POINTER, VERSION_FILE = "production", "version.json"
EXPORT, CHECKPOINT, CONFIG, SPEC = "export", "checkpoint", "config.yaml", "feature_spec.yaml"
_VERSION_ID = re.compile(r"^v(\d{4,})$")


class RegistryError(ValueError):
    pass


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def code_version() -> str:
    """PLE_CODE_VERSION if set (CI, images), else the git commit of this checkout (+"-dirty"
    with uncommitted changes), else the installed package version (e.g. under `ray job submit
    --working-dir`, which uploads no .git)."""
    if os.environ.get("PLE_CODE_VERSION"):
        return os.environ["PLE_CODE_VERSION"]
    repo = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return "ple-pipeline " + version("ple-pipeline")
    except Exception:  # not installed
        return "unknown"


def _fsync(path: str, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str) -> None:
    """Flush every file and directory under `root`, so that a rename published after it never
    names data still only in the page cache (a power loss would otherwise leave empty files)."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            _fsync(os.path.join(dirpath, name))
        _fsync(dirpath, directory=True)


def write_json_atomic(path: str, data: dict) -> None:
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync(os.path.dirname(path) or ".", directory=True)


@dataclass
class Version:
    id: str
    path: str
    record: dict  # version.json
    status: str  # production | retired (was production) | rejected | incomplete (interrupted promotion)

    @property
    def export_dir(self) -> str:
        return os.path.join(self.path, EXPORT)

    @property
    def checkpoint_dir(self) -> str:
        return os.path.join(self.path, CHECKPOINT)


class Registry:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.versions_dir = os.path.join(self.root, "versions")
        self.staging_dir = os.path.join(self.root, ".staging")
        self.pointer_path = os.path.join(self.root, POINTER)
        self.lock_path = os.path.join(self.root, ".retrain.lock")

    def ensure(self) -> "Registry":
        os.makedirs(self.versions_dir, exist_ok=True)
        os.makedirs(self.staging_dir, exist_ok=True)
        return self

    # -- reading ------------------------------------------------------------------------------
    def pointer(self) -> Optional[dict]:
        try:
            with open(self.pointer_path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise RegistryError(f"{self.pointer_path}: unreadable production pointer: {e}") from None
        if not isinstance(data, dict) or not isinstance(data.get("version"), str):
            raise RegistryError(f"{self.pointer_path}: not a production pointer (no 'version')")
        return data

    def versions(self) -> list[Version]:
        """Every committed version, oldest first."""
        if not os.path.isdir(self.versions_dir):
            return []
        pointer = self.pointer() or {}
        promoted = {h["version"] for h in pointer.get("history", [])}
        out = []
        for name in os.listdir(self.versions_dir):
            m = _VERSION_ID.match(name)
            path = os.path.join(self.versions_dir, name)
            if not m or not os.path.isfile(os.path.join(path, VERSION_FILE)):
                continue
            with open(os.path.join(path, VERSION_FILE)) as f:
                record = json.load(f)
            if name == pointer.get("version"):
                status = "production"
            elif record.get("decision") == "rejected":
                status = "rejected"
            elif name in promoted:
                status = "retired"
            else:
                status = "incomplete"
            out.append(Version(name, path, record, status))
        return sorted(out, key=lambda v: int(v.id[1:]))

    def get(self, version_id: str) -> Version:
        for v in self.versions():
            if v.id == version_id:
                return v
        raise RegistryError(f"{self.root}: no version '{version_id}'")

    def production(self) -> Optional[Version]:
        pointer = self.pointer()
        return None if pointer is None else self.get(pointer["version"])

    def next_version_id(self) -> str:
        """One more than the highest committed id. Call under the lock: the id is only reserved
        by the rename that commits it."""
        ids = [int(v.id[1:]) for v in self.versions()]
        return f"v{(max(ids) if ids else 0) + 1:04d}"

    # -- writing (callers hold the retrain lock) ------------------------------------------------
    def stage(self, version_id: str) -> str:
        path = os.path.join(self.staging_dir, f"{version_id}-{os.getpid()}")
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        return path

    def publish(self, staged: str, version_id: str, record: dict, promote: bool,
                before_commit: Optional[Callable[[], None]] = None) -> Version:
        """Commit a staged version: version.json (written last, so a staged directory without it
        is incomplete), fsync, rename into versions/, then, if `promote`, switch the pointer.
        `before_commit` runs just before the rename (tests pause there to kill the process)."""
        final = os.path.join(self.versions_dir, version_id)
        if os.path.exists(final):
            raise RegistryError(f"{final} exists: version ids are never reused")
        record = {**record, "version": version_id, "decision": record.get("decision", "accepted")}
        with open(os.path.join(staged, VERSION_FILE), "w") as f:
            f.write(json.dumps(record, indent=2, sort_keys=True))
        fsync_tree(staged)
        if before_commit is not None:
            before_commit()
        os.rename(staged, final)
        _fsync(self.versions_dir, directory=True)
        if promote:
            self.set_production(version_id, by=record.get("promoted_by", "retrain"))
        return self.get(version_id)

    def set_production(self, version_id: str, by: str, note: Optional[str] = None) -> None:
        """Switch the pointer to `version_id` (atomic replace), appending to its history."""
        if not os.path.isfile(os.path.join(self.versions_dir, version_id, VERSION_FILE)):
            raise RegistryError(f"{self.root}: no version '{version_id}'")
        pointer = self.pointer() or {"history": []}
        entry = {"version": version_id, "at": now_iso(), "by": by, **({"note": note} if note else {})}
        write_json_atomic(self.pointer_path, {"version": version_id, "updated": entry["at"],
                                              "history": pointer.get("history", []) + [entry]})

    def recover(self, log: Callable[[str], None] = print) -> list[str]:
        """Undo what killed runs left (call under the lock): staged directories, temporary
        pointer files, and an accepted version whose promotion never switched the pointer."""
        removed = []
        if os.path.isdir(self.staging_dir):
            for name in os.listdir(self.staging_dir):
                shutil.rmtree(os.path.join(self.staging_dir, name), ignore_errors=True)
                removed.append(f".staging/{name}")
        for name in os.listdir(self.root):
            if name.startswith(f".{POINTER}.tmp-"):
                os.unlink(os.path.join(self.root, name))
                removed.append(name)
        pointer = self.pointer()
        # A pointer written by hand (no history) cannot tell an interrupted promotion from a
        # version rolled back from: then nothing is deleted.
        if pointer is None or "history" in pointer:
            versions = self.versions()
            # Only the newest can be an interrupted promotion: the next run removes it before
            # it publishes anything.
            if versions and versions[-1].status == "incomplete":
                v = versions[-1]
                aside = os.path.join(self.staging_dir, f"{v.id}.interrupted")
                os.makedirs(self.staging_dir, exist_ok=True)
                os.rename(v.path, aside)  # out of versions/ in one step, then deleted
                _fsync(self.versions_dir, directory=True)
                shutil.rmtree(aside, ignore_errors=True)
                removed.append(f"versions/{v.id} (promotion interrupted before the pointer switch)")
        for item in removed:
            log(f"[registry] removed {item}, left by an interrupted run")
        return removed


def resolve_model_ref(ref: str) -> Optional[str]:
    """Export directory for '<registry root>@<version>' or '<registry root>@production', or None
    if `ref` is not of that form (a hook for pipeline.scoring.register_model_resolver)."""
    from pipeline.export import ExportError

    root, sep, name = ref.rpartition("@")
    if not sep or not os.path.isdir(os.path.join(root, "versions")):
        return None
    reg = Registry(root)
    try:
        version = reg.production() if name == "production" else reg.get(name)
    except RegistryError as err:
        raise ExportError(f"model '{ref}': {err}") from None
    if version is None:
        raise ExportError(f"model '{ref}': the registry has no production version yet")
    return version.export_dir

"""Model registry on a filesystem path: every model the daily retrain produced, and which one
is in production.

    <root>/production              pointer (JSON): {"version": "v0003", "updated": ..., "history": [...]}
    <root>/versions/v0003/
        version.json               status (accepted/rejected + reason), parent, days, metrics, gate,
                                   code version, warm start, training history
        export/                    the exported model (safetensors files, model.json): what scoring loads
        checkpoint/                the sharded training checkpoint (DCP + extra.json + plan.json):
                                   the next day's warm start (weights and optimizer state)
        config.yaml                the training job's config as run (days and warm start included)
        feature_spec.yaml          the feature spec it was trained with
    <root>/.staging/               versions being written (never part of the registry)
    <root>/.retrain.lock           held by the running retrain (pipeline/registry/lock.py)

The root is a local (or mounted POSIX) path or a URL of any fsspec filesystem (s3://bucket/reg,
gs://..., memory://...): pipeline/registry/store.py holds the few operations that differ.

Atomicity:
  * a version is committed by its version.json: on a local path the version is written under
    .staging/, fsynced, and renamed into versions/ with it; on a URL the files are uploaded to
    versions/<id>/ and version.json goes last. A version without it is never listed, so a
    reader sees a whole version or none;
  * the production pointer is replaced whole (temporary file + os.replace; one object put);
  * a rejected candidate is committed by its one rename; an accepted one by the pointer switch
    that follows it. A run killed between the two leaves an accepted version that the pointer's
    history never names: `list` shows it as "incomplete", nothing resolves it, and `recover()`
    (first thing of the next retrain, under the lock) deletes it, so the registry is back to
    exactly its previous files.
    On a URL, recover() also deletes the uploads of a version that never got its version.json.
Nothing ever modifies a committed version; only `recover()` deletes, and only those cases.
Consumers that need files on local disk (the warm start, scoring) get a downloaded copy of a
version on a URL (`fetch`, `resolve_model_ref`): committed versions never change, so copies
stay valid.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.common.files import TMP_MARK
from pipeline.registry.lock import STALE_AFTER_S
from pipeline.registry.store import RegistryError, is_url, open_store  # RegistryError: raised by both

POINTER, VERSION_FILE = "production", "version.json"
EXPORT, CHECKPOINT, CONFIG, SPEC = "export", "checkpoint", "config.yaml", "feature_spec.yaml"
_VERSION_ID = re.compile(r"^v(\d{4,})$")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def code_version() -> str:
    """PLE_CODE_VERSION if set (CI, images), else the git commit of this checkout (+"-dirty"
    with uncommitted changes), else the installed package version (e.g. under `ray job submit
    --working-dir`, which uploads no .git)."""
    if os.environ.get("PLE_CODE_VERSION"):
        return os.environ["PLE_CODE_VERSION"]
    repo = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return "ple-pipeline " + version("ple-pipeline")
    except Exception:  # not installed
        return "unknown"


@dataclass
class Version:
    id: str
    path: str  # a local path or a URL, as the registry root
    record: dict  # version.json
    status: str  # production | retired (was production) | rejected | incomplete (interrupted promotion)

    def _part(self, name: str) -> str:
        return posixpath.join(self.path, name) if is_url(self.path) else os.path.join(self.path, name)

    @property
    def export_dir(self) -> str:
        return self._part(EXPORT)

    @property
    def checkpoint_dir(self) -> str:
        return self._part(CHECKPOINT)


class Registry:
    def __init__(self, root: str) -> None:
        self.store = open_store(root)
        self.root = self.store.root
        self.versions_dir = self.store.join("versions")
        self.staging_dir = self.store.join(".staging")
        self.pointer_path = self.store.join(POINTER)
        self.lock_path = self.store.join(".retrain.lock")

    def ensure(self) -> Registry:
        """This registry, its versions/ directory made if missing (a retrain's first run)."""
        try:
            self.store.makedirs(self.versions_dir)
        except OSError as e:
            raise RegistryError(f"registry {self.root}: cannot create {self.versions_dir} ({e})") from None
        return self

    def existing(self) -> Registry:
        """This registry, if a retrain has made it; else RegistryError (a mistyped root would
        otherwise read as a registry with no versions)."""
        if not self.store.isdir(self.versions_dir):
            raise RegistryError(f"no registry at {self.root} (no {self.versions_dir}: a retrain makes it)")
        return self

    def lock(self, stale_after_s: float = STALE_AFTER_S, log: Callable[[str], None] = print):
        """The retrain lock of this registry (pipeline/registry/lock.py), for `with`."""
        return self.store.lock(self.lock_path, stale_after_s, log)

    # -- reading ------------------------------------------------------------------------------
    def pointer(self) -> dict | None:
        text = self.store.read_text(self.pointer_path)
        if text is None:
            return None
        try:
            data = json.loads(text)
        except ValueError as e:
            raise RegistryError(f"{self.pointer_path}: unreadable production pointer: {e}") from None
        if not isinstance(data, dict) or not isinstance(data.get("version"), str):
            raise RegistryError(f"{self.pointer_path}: not a production pointer (no 'version')")
        return data

    def versions(self) -> list[Version]:
        """Every committed version, oldest first."""
        pointer = self.pointer() or {}
        promoted = {h["version"] for h in pointer.get("history", [])}
        out = []
        for name in self.store.listdir(self.versions_dir):
            if not _VERSION_ID.match(name):
                continue
            path = self.store.join("versions", name)
            text = self.store.read_text(self.store.join("versions", name, VERSION_FILE))
            if text is None:  # not committed (an upload interrupted before its version.json)
                continue
            record = json.loads(text)
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

    def production(self) -> Version | None:
        pointer = self.pointer()
        return None if pointer is None else self.get(pointer["version"])

    def next_version_id(self) -> str:
        """One more than the highest id present, committed or not. Call under the lock: the id
        is only reserved by the commit."""
        ids = [int(m.group(1)) for m in map(_VERSION_ID.match, self.store.listdir(self.versions_dir)) if m]
        return f"v{(max(ids) if ids else 0) + 1:04d}"

    def fetch(self, path: str, dest: str) -> str:
        """A local directory holding the version tree at `path` (its export or checkpoint): the
        path itself on a local registry, else a download into `dest`."""
        return self.store.fetch(path, dest)

    # -- writing (callers hold the retrain lock) ------------------------------------------------
    def stage(self, version_id: str) -> str:
        """A fresh local directory to write version `version_id` into before `publish`."""
        return self.store.staging_dir(f"{version_id}-{os.getpid()}")

    def publish(
        self, staged: str, version_id: str, record: dict, promote: bool, before_commit: Callable[[], None] | None = None
    ) -> Version:
        """Commit a staged version (its version.json last, see the module doc), then, if
        `promote`, switch the pointer. `before_commit` runs just before the commit (tests pause
        there to kill the process)."""
        final = self.store.join("versions", version_id)
        if self.store.isdir(final):
            raise RegistryError(f"{final} exists: version ids are never reused")
        record = {**record, "version": version_id, "decision": record.get("decision", "accepted")}
        self.store.commit(staged, final, VERSION_FILE, json.dumps(record, indent=2, sort_keys=True), before_commit)
        if promote:
            self.set_production(version_id, by=record.get("promoted_by", "retrain"))
        return self.get(version_id)

    def set_production(self, version_id: str, by: str, note: str | None = None) -> None:
        """Switch the pointer to `version_id` (replaced whole), appending to its history."""
        if not self.store.isfile(self.store.join("versions", version_id, VERSION_FILE)):
            raise RegistryError(f"{self.root}: no version '{version_id}'")
        pointer = self.pointer() or {"history": []}
        entry = {"version": version_id, "at": now_iso(), "by": by, **({"note": note} if note else {})}
        self.store.write_json(
            self.pointer_path,
            {"version": version_id, "updated": entry["at"], "history": pointer.get("history", []) + [entry]},
        )

    def recover(self, log: Callable[[str], None] = print) -> list[str]:
        """Undo what killed runs left (call under the lock): staged directories, temporary
        pointer files, uploads never committed, and an accepted version whose promotion never
        switched the pointer."""
        removed = []
        for name in self.store.listdir(self.staging_dir):
            self.store.remove(self.store.join(".staging", name))
            removed.append(f".staging/{name}")
        for name in self.store.listdir(self.root):
            if name.startswith(f".{POINTER}{TMP_MARK}"):
                self.store.remove(self.store.join(name))
                removed.append(name)
        versions = self.versions()  # the committed ones: what follows removes no committed one
        committed = {v.id for v in versions}
        for name in self.store.listdir(self.versions_dir):
            if _VERSION_ID.match(name) and name not in committed:
                self.store.remove(self.store.join("versions", name))
                removed.append(f"versions/{name} (upload interrupted before its version.json)")
        pointer = self.pointer()
        # A pointer written by hand (no history) cannot tell an interrupted promotion from a
        # version rolled back from: then nothing is deleted. Only the newest can be an
        # interrupted promotion: the next run removes it before it publishes anything.
        if (pointer is None or "history" in pointer) and versions and versions[-1].status == "incomplete":
            v = versions[-1]
            self.store.uncommit_and_remove(v.path, VERSION_FILE)
            removed.append(f"versions/{v.id} (promotion interrupted before the pointer switch)")
        for item in removed:
            log(f"[registry] removed {item}, left by an interrupted run")
        return removed


def resolve_model_ref(ref: str) -> str | None:
    """Where the export of '<registry root>@<version>' or '<registry root>@production' is (a
    path, or a URL for a registry at a URL: see registry_store.fetched_copy), or None if `ref`
    is not of that form."""
    from pipeline.train.export import ExportError

    root, sep, name = ref.rpartition("@")
    if not sep or not root:
        return None
    try:
        reg = Registry(root)
        if not reg.store.isdir(reg.versions_dir):
            return None
        version = reg.production() if name == "production" else reg.get(name)
    except RegistryError as err:
        raise ExportError(f"model '{ref}': {err}") from None
    if version is None:
        raise ExportError(f"model '{ref}': the registry has no production version yet")
    return version.export_dir

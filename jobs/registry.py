"""Inspect the model registry written by `python -m jobs.retrain`, and roll production back.

    python -m jobs.registry list  --registry registry/local
    python -m jobs.registry show  --registry registry/local v0003    # or: production
    python -m jobs.registry promote --registry registry/local v0002 --note "v0003 hurt CTR in A/B"
    python -m jobs.registry list  --registry s3://bucket/ple-registry      # any fsspec URL

--registry defaults to `retrain.registry` of --config (configs/jobs/retrain_local.yaml). `promote`
takes the retrain lock (it fails while a retrain runs, exit 75) and switches the production
pointer atomically; promoting a rejected version needs --force.
"""

from __future__ import annotations

import argparse
import json
import sys


def _registry_root(args) -> str:
    if args.registry:
        return args.registry
    from pipeline.retrain.config import load_retrain_config

    return load_retrain_config(args.config).retrain.registry


def _metric(record: dict, task: str, name: str) -> str:
    value = ((record.get("metrics") or {}).get("candidate") or {}).get(f"{task}/{name}")
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def list_versions(reg) -> list[str]:
    versions = reg.versions()
    if not versions:
        return [f"{reg.root}: no versions yet"]
    tasks = sorted(
        {k.split("/")[0] for v in versions for k in ((v.record.get("metrics") or {}).get("candidate") or {})}
    )
    head = (
        f"{'version':8} {'status':11} {'parent':7} {'trained on':23} {'eval day':10} "
        + " ".join(f"{t + ' auc':>8} {t + ' ll':>8}" for t in tasks)
        + "  note"
    )
    lines = [head]
    for v in versions:
        r = v.record
        days = "..".join(r.get("train_days") or ["?"])
        note = r.get("reason") or ""
        if v.status == "incomplete":
            note = "promotion interrupted: removed by the next retrain"
        lines.append(
            f"{v.id:8} {v.status:11} {r.get('parent') or '-':7} {days:23} {r.get('eval_day', '?'):10} "
            + " ".join(f"{_metric(r, t, 'auc'):>8} {_metric(r, t, 'logloss'):>8}" for t in tasks)
            + f"  {note}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["list", "show", "promote"])
    p.add_argument("version", nargs="?", help="version id (show, promote); show also takes 'production'")
    p.add_argument("--registry", default=None, help="registry root (default: retrain.registry of --config)")
    p.add_argument("--config", default="configs/jobs/retrain_local.yaml")
    p.add_argument("--note", default=None, help="promote: why (kept in the pointer's history)")
    p.add_argument("--force", action="store_true", help="promote: allow a rejected version")
    args = p.parse_intermixed_args(argv)  # options before or after the version id
    if args.command == "list" and args.version:
        # `list ROOT` would otherwise list the default registry and say nothing of ROOT.
        p.error(f"list takes no version id (got {args.version!r}); give the registry as --registry ROOT")

    from pipeline.common.config import ConfigError
    from pipeline.common.errors import EXIT_IN_USE, fail
    from pipeline.registry.lock import LockHeldError
    from pipeline.registry.versions import Registry, RegistryError

    try:
        reg = Registry(_registry_root(args)).existing()
        if args.command == "list":
            print("\n".join(list_versions(reg)))
            pointer = reg.pointer()
            print(f"production: {pointer['version'] if pointer else 'none'}")
            return 0
        if not args.version:
            p.error(f"{args.command} needs a version id")
        if args.command == "show" and args.version == "production":
            version = reg.production()
            if version is None:
                sys.exit(f"error: {reg.root}: no production version yet")
        else:
            version = reg.get(args.version)
        if args.command == "show":
            print(json.dumps({"path": version.path, "status": version.status, **version.record}, indent=2))
            return 0
        if version.status == "rejected" and not args.force:
            sys.exit(
                f"error: {version.id} was rejected ({version.record.get('reason')}); use --force to promote it anyway"
            )
        if version.status == "incomplete":
            sys.exit(f"error: {version.id} is an interrupted promotion, not a usable version")
        with reg.lock():
            reg.set_production(version.id, by="manual", note=args.note)
        print(f"production: {version.id}")
        return 0
    except LockHeldError as err:  # a retrain or another promote works on the registry: try again later
        fail(err, EXIT_IN_USE)
    except (ConfigError, RegistryError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    sys.exit(main())

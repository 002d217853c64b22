"""Synthetic impression logs with a planted ground truth.

Each row is an impression of `item_id` to `user_id`. Ids are Zipf distributed (a few users and
items dominate, as in real logs). Hidden per-user and per-item properties are derived from the
ids by hashing, so they are the same in every file without storing any table:

    affinity    = <u_user, v_item> / sqrt(K)             shared by both tasks
    history_aff = <mean(v_history), v_item> / sqrt(K)     shared by both tasks
    clickbait   in [-1, 1] per item, times `conflict`      + for click, - for conversion (seesaw)
    quality     in [-1, 1] per item (seen noisily via the dense `item_rating`)   conversion only
    price_sens  in [0, 1] per user, times log(price)      conversion only
    hour, device                                          click only

    p_click = sigmoid(-1.8 + 0.9 affinity + 0.5 history_aff + 0.8 c clickbait + 0.3 cos(2 pi hour/24) + device)
    p_conv  = sigmoid(-1.3 + 0.9 affinity + 0.5 history_aff - 0.9 c clickbait + 0.7 quality
                      - 1.0 price_sens (log price - 2.5))                        (given a click)
    click ~ Bernoulli(p_click); conversion = click * Bernoulli(p_conv)

`conflict` (c above) sets how strongly the tasks pull apart: 0 takes the clickbait effect out
(the tasks share affinity and differ only in their own signals), 1 is the default, 2 doubles it.

`true_p_click` and `true_p_conv` (= P(conversion | click)) are written alongside, so the best
achievable AUC of each task is the AUC of its true probability on the same rows.

Randomness comes from SeedSequence([seed, day, file, chunk]), so every file (and each chunk of a
file) is reproducible on its own, whichever worker writes it and in whatever order.

`impression_id` is a row key: consecutive ids from a per-chunk base drawn from the same seed
sequence (not from the generator, so the other columns are unchanged). Unique within a chunk
by construction; two chunks collide only if their ranges overlap (~1e-6 for 1e9 rows).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.id_mapping import hash_int64

DEFAULT_START_DAY = "2026-01-01"  # the first day of every config in configs/jobs/ (dt=2026-01-01)
LATENT_DIM = 4
DEVICES = ("android", "ios", "web")
DEVICE_PROBS = (0.55, 0.35, 0.10)
DEVICE_CLICK_EFFECT = np.array([0.0, 0.2, -0.3])
# Salts keep the hidden properties derived from one id independent of each other.
_SALT_USER, _SALT_ITEM, _SALT_BAIT, _SALT_QUALITY, _SALT_SENS, _SALT_AGE, _SALT_PRICE, _SALT_CAT = range(1, 9)


@dataclass(frozen=True)
class SyntheticConfig:
    num_users: int = 100_000
    num_items: int = 20_000
    num_categories: int = 300
    zipf_exponent: float = 1.1
    mean_history: float = 8.0
    max_history: int = 40
    conflict: float = 1.0  # strength of the clickbait signal that raises clicks and lowers conversions
    # Share of the users and of the items replaced every day (0: one fixed catalogue). On day d
    # the catalogue is the ids [d * shift, d * shift + n), shift = round(id_drift * n): each day
    # the oldest `shift` ids leave and as many new ones arrive, each at a popularity rank drawn
    # from its id (Zipf over the ranks as without drift), so new ids are popular as often as old ones.
    id_drift: float = 0.0


SCHEMA = pa.schema(
    [
        ("impression_id", pa.int64()),  # unique row key (scoring joins outputs on it); not a feature
        ("user_id", pa.int64()),
        ("item_id", pa.int64()),
        ("category", pa.string()),
        ("device", pa.string()),
        ("history", pa.list_(pa.int64())),
        ("price", pa.float32()),
        ("user_age_days", pa.float32()),
        ("item_rating", pa.float32()),
        ("hour", pa.float32()),
        ("click", pa.int8()),
        ("conversion", pa.int8()),
        ("true_p_click", pa.float32()),
        ("true_p_conv", pa.float32()),
    ]
)


# -- hidden properties, derived from ids by hashing -----------------------------------------------
def _uniform(ids: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic U[0, 1) per id."""
    h = hash_int64(np.asarray(ids, dtype=np.int64) * 16 + salt)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _latent(ids: np.ndarray, salt: int) -> np.ndarray:
    """[n, K] vectors with unit-variance entries (uniform on [-sqrt 3, sqrt 3])."""
    cols = [_uniform(ids * LATENT_DIM + k, salt) for k in range(LATENT_DIM)]
    return (np.stack(cols, axis=1) * 2 - 1) * np.sqrt(3.0)


@functools.lru_cache(maxsize=8)
def _zipf_cdf(n: int, exponent: float) -> np.ndarray:
    w = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    cdf = np.cumsum(w)
    return cdf / cdf[-1]


def _zipf_ids(
    rng: np.random.Generator, n: int, exponent: float, size: int, drift: float = 0.0, day: int = 0, salt: int = 0
) -> np.ndarray:
    rank = np.searchsorted(_zipf_cdf(n, exponent), rng.random(size), side="right")
    rank = np.minimum(rank, n - 1)
    if drift:
        return _drifting_catalogue(n, drift, day, salt)[rank]
    # Scatter popularity ranks over the id space (2654435761 is prime): the most popular id is
    # not 0, so nothing can learn popularity from the id's magnitude.
    return ((rank.astype(np.int64) + 1) * 2654435761) % n


@functools.lru_cache(maxsize=8)
def _drifting_catalogue(n: int, drift: float, day: int, salt: int) -> np.ndarray:
    """Day `day`'s ids by popularity rank (see SyntheticConfig.id_drift)."""
    ids = np.arange(n, dtype=np.int64) + day * round(drift * n)
    return ids[np.argsort(_uniform(ids, salt + 64), kind="stable")]


@functools.lru_cache(maxsize=8)
def _category_names(n: int) -> pa.Array:
    return pa.array([f"cat_{i:04d}" for i in range(n)], pa.string())


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# -- generation ---------------------------------------------------------------------------------
def _impression_ids(n: int, seed: int, stream: tuple[int, ...]) -> np.ndarray:
    # A separate SeedSequence child (spawn key 1): drawing the base leaves the row generator,
    # and therefore every other column, exactly as it was before this column existed.
    base = np.random.SeedSequence([seed, *stream], spawn_key=(1,)).generate_state(1, np.uint64)[0]
    base = int(base >> np.uint64(1)) % (2**63 - max(n, 1))  # non-negative, no overflow
    return np.arange(base, base + n, dtype=np.int64)


def generate_table(
    num_rows: int,
    seed: int = 0,
    config: SyntheticConfig = SyntheticConfig(),
    stream: tuple[int, ...] = (),
    day: int = 0,
) -> pa.Table:
    """`num_rows` impressions in memory (for unit tests, demos, and as one chunk of a file).
    `stream` extends the seed so that chunks of different files/days differ; `day` (from the
    first day, 0) picks the day's catalogue when config.id_drift is set."""
    c = config
    rng = np.random.default_rng(np.random.SeedSequence([seed, *stream]))
    n = num_rows
    user = _zipf_ids(rng, c.num_users, c.zipf_exponent, n, c.id_drift, day, _SALT_USER)
    item = _zipf_ids(rng, c.num_items, c.zipf_exponent, n, c.id_drift, day, _SALT_ITEM)
    hist_len = np.minimum(rng.poisson(c.mean_history, n), c.max_history).astype(np.int64)
    hist_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(hist_len, out=hist_offsets[1:])
    hist_items = _zipf_ids(rng, c.num_items, c.zipf_exponent, int(hist_offsets[-1]), c.id_drift, day, _SALT_ITEM)
    device = rng.choice(len(DEVICES), size=n, p=DEVICE_PROBS)
    hour = rng.integers(0, 24, size=n)
    price_noise = rng.standard_normal(n)
    rating_noise = rng.standard_normal(n)
    u_click, u_conv = rng.random(n), rng.random(n)

    u, v = _latent(user, _SALT_USER), _latent(item, _SALT_ITEM)
    affinity = (u * v).sum(axis=1) / np.sqrt(LATENT_DIM)
    # Mean latent of each row's history: segment sums from one cumulative sum (no row loop).
    hist_sum = np.zeros((len(hist_items) + 1, LATENT_DIM))
    np.cumsum(_latent(hist_items, _SALT_ITEM), axis=0, out=hist_sum[1:])
    hist_mean = hist_sum[hist_offsets[1:]] - hist_sum[hist_offsets[:-1]]
    hist_mean /= np.maximum(hist_len, 1)[:, None]
    history_aff = (hist_mean * v).sum(axis=1) / np.sqrt(LATENT_DIM) * np.sqrt(np.minimum(hist_len, 4))
    clickbait = _uniform(item, _SALT_BAIT) * 2 - 1
    quality = _uniform(item, _SALT_QUALITY) * 2 - 1
    price_sens = _uniform(user, _SALT_SENS)
    base_log_price = 1.5 + 2.0 * _uniform(item, _SALT_PRICE)
    price = np.exp(base_log_price) * np.exp(0.1 * price_noise)
    user_age_days = 1500.0 * _uniform(user, _SALT_AGE)
    item_rating = 3.0 + 1.5 * quality + 0.5 * rating_noise
    category = (hash_int64(item * 16 + _SALT_CAT) % np.uint64(c.num_categories)).astype(np.int64)

    p_click = _sigmoid(
        -1.8
        + 0.9 * affinity
        + 0.5 * history_aff
        + 0.8 * c.conflict * clickbait
        + 0.3 * np.cos(2 * np.pi * hour / 24)
        + DEVICE_CLICK_EFFECT[device]
    )
    p_conv = _sigmoid(
        -1.3
        + 0.9 * affinity
        + 0.5 * history_aff
        - 0.9 * c.conflict * clickbait
        + 0.7 * quality
        - 1.0 * price_sens * (np.log(price) - 2.5)
    )
    click = u_click < p_click
    conversion = click & (u_conv < p_conv)  # conversions only happen after a click

    history = pa.ListArray.from_arrays(pa.array(hist_offsets.astype(np.int32)), pa.array(hist_items))
    return pa.Table.from_arrays(
        [
            pa.array(_impression_ids(n, seed, stream)),
            pa.array(user),
            pa.array(item),
            _category_names(c.num_categories).take(pa.array(category)),
            pa.array(DEVICES, pa.string()).take(pa.array(device)),
            history,
            pa.array(price.astype(np.float32)),
            pa.array(user_age_days.astype(np.float32)),
            pa.array(item_rating.astype(np.float32)),
            pa.array(hour.astype(np.float32)),
            pa.array(click.astype(np.int8)),
            pa.array(conversion.astype(np.int8)),
            pa.array(p_click.astype(np.float32)),
            pa.array(p_conv.astype(np.float32)),
        ],
        schema=SCHEMA,
    )


def write_file(
    path: str,
    num_rows: int,
    seed: int,
    day_index: int,
    file_index: int,
    config: SyntheticConfig = SyntheticConfig(),
    chunk_rows: int = 100_000,
) -> dict:
    """Write one Parquet file chunk by chunk (memory bounded by chunk_rows), atomically: the
    file appears under its final name only when complete, so readers never see half a file."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with pq.ParquetWriter(tmp, SCHEMA) as writer:
        for chunk, start in enumerate(range(0, num_rows, chunk_rows)):
            rows = min(chunk_rows, num_rows - start)
            writer.write_table(generate_table(rows, seed, config, stream=(day_index, file_index, chunk), day=day_index))
    os.replace(tmp, path)
    return {"path": path, "rows": num_rows}


def day_names(start_day: str, days: int) -> list[str]:
    first = dt.date.fromisoformat(start_day)
    return [(first + dt.timedelta(days=d)).isoformat() for d in range(days)]


# Below this many rows the calling process writes the files itself: a Ray task runs in a worker
# process whose start costs ~1.5 CPU-s on 2 cores, about what writing 300k rows here costs
# (~250k rows/s), and the tasks of a small data set start more workers than they keep busy.
RAY_TASKS_MIN_ROWS = 300_000


def wants_ray_tasks(rows: int) -> bool:
    """Whether generate_dataset's default (ray_tasks=None) writes `rows` with Ray tasks."""
    return rows >= RAY_TASKS_MIN_ROWS


def generate_dataset(
    out_dir: str,
    rows: int,
    days: int = 1,
    files_per_day: int = 1,
    seed: int = 0,
    start_day: str = DEFAULT_START_DAY,
    config: SyntheticConfig | None = None,
    chunk_rows: int = 100_000,
    ray_tasks: bool | None = None,
) -> list[dict]:
    """Write `rows` impressions as out_dir/dt=YYYY-MM-DD/part-NNNNN.parquet. Returns [{path, rows}].
    ray_tasks: one Ray task per file (on the running Ray cluster, or a local one it starts);
    False: every file in this process; None: Ray tasks from RAY_TASKS_MIN_ROWS rows on. The
    files are the same either way (each file's randomness is its own, see the module docstring)."""
    config = config or SyntheticConfig()
    n_files = days * files_per_day
    if rows < n_files:
        raise ValueError(f"rows ({rows}) must be at least days * files_per_day ({n_files})")
    per_file, extra = divmod(rows, n_files)
    files = [
        (os.path.join(out_dir, f"dt={day}", f"part-{f:05d}.parquet"), per_file + (d * files_per_day + f < extra), d, f)
        for d, day in enumerate(day_names(start_day, days))
        for f in range(files_per_day)
    ]
    use_ray = wants_ray_tasks(rows) if ray_tasks is None else ray_tasks
    if not use_ray:
        return [write_file(path, n, seed, d, f, config, chunk_rows) for path, n, d, f in files]
    import ray

    task = ray.remote(num_cpus=1)(write_file)
    return ray.get([task.remote(path, n, seed, d, f, config, chunk_rows) for path, n, d, f in files])


def best_achievable_auc(table: pa.Table) -> dict[str, float]:
    """AUC of the planted true probabilities (the ceiling any model can reach on these rows),
    per task of configs/features/synthetic.yaml: ctr on all rows, cvr on clicked rows."""
    import torch
    from torchmetrics.functional.classification import binary_auroc

    click = torch.from_numpy(table["click"].to_numpy().astype(np.int64))
    conv = torch.from_numpy(table["conversion"].to_numpy().astype(np.int64))
    p_click = torch.from_numpy(table["true_p_click"].to_numpy().astype(np.float32))
    p_conv = torch.from_numpy(table["true_p_conv"].to_numpy().astype(np.float32))
    clicked = click == 1
    return {"ctr": binary_auroc(p_click, click).item(), "cvr": binary_auroc(p_conv[clicked], conv[clicked]).item()}


def best_achievable_auc_of_files(files: list[str]) -> dict[str, float]:
    """best_achievable_auc over generated files; {} when they hold no planted truth (real logs)."""
    import pyarrow.parquet as pq

    columns = ["click", "conversion", "true_p_click", "true_p_conv"]
    if not files or not set(columns) <= set(pq.read_schema(files[0]).names):
        return {}
    return best_achievable_auc(pa.concat_tables(pq.read_table(f, columns=columns) for f in files))

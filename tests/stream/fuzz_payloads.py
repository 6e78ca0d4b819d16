"""Fuzzed ``clickstream`` records: mutations of real MovieLens events and hypothesis data.

Each :class:`Payload` carries its category, the record key and value, and, for a
valid event that a client sent to another partition than its user's, that partition.
``EXPECTED`` says which outcomes each category allows: ``"applied"`` or DLQ reasons
(features/messages.py). The hypothesis categories allow any outcome: the test holds the
worker to the schema's verdict on each payload (``parse_record``) instead.

Good events are stamped within ten minutes of ``base_ts`` (none is late) and every
payload has its own ``event_id`` (none is a re-send), so each good one must be applied
exactly once and each bad one dead-lettered exactly once.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from streamrec.features.messages import EVENT_TYPES, MAX_ID_LENGTH, MAX_QUERY_LENGTH, ClickEvent, Rejection, parse_record
from streamrec.features.routing import user_partition

MAX_BYTES = 4096  # the worker's default max_event_bytes
CONTROL_CHARS = ["\x00", "\n", "\t", "\x1b", "\x1f"]

BODY_REASONS = {"payload_too_large", "invalid_encoding", "invalid_json", "not_an_object", "missing_field",
                "unknown_field", "invalid_field", "inconsistent_fields"}
ANY = {"applied", "missing_key", "key_mismatch", *BODY_REASONS}
EXPECTED: dict[str, set[str]] = {
    "real": {"applied"},
    "real_variant": {"applied"},
    "wrong_partition": {"applied"},
    "hypothesis_valid": {"applied"},
    "broken_json": {"invalid_json", "invalid_encoding"},
    "not_an_object": {"not_an_object"},
    "wrong_type": {"invalid_field"},
    "missing_field": {"missing_field", "inconsistent_fields"},
    "extra_field": {"unknown_field"},
    "inconsistent": {"inconsistent_fields"},
    "huge_string": {"invalid_field", "payload_too_large"},
    "nan_or_out_of_range": {"invalid_field"},
    "unknown_type": {"invalid_field"},
    "control_chars": {"invalid_field"},
    "binary_garbage": {"invalid_encoding", "invalid_json", "not_an_object"},
    "missing_key": {"missing_key"},
    "key_mismatch": {"key_mismatch"},
    "hypothesis_any": ANY,
}
# how many of each: 10,200 in all
COUNTS: dict[str, int] = {
    "real": 2000, "real_variant": 600, "wrong_partition": 400, "hypothesis_valid": 800,
    "broken_json": 600, "not_an_object": 300, "wrong_type": 600, "missing_field": 500, "extra_field": 400,
    "inconsistent": 300, "huge_string": 400, "nan_or_out_of_range": 500, "unknown_type": 300,
    "control_chars": 200, "binary_garbage": 600, "missing_key": 400, "key_mismatch": 500, "hypothesis_any": 800,
}


@dataclass(frozen=True)
class Payload:
    category: str
    key: bytes | None
    value: bytes
    partition: int | None = None  # sent to this partition (a client that partitions otherwise)

    def verdict(self) -> str:
        """``"applied"`` or the DLQ reason: what the schema says of this record."""
        parsed = parse_record(self.key, self.value, max_bytes=MAX_BYTES)
        return parsed.reason if isinstance(parsed, Rejection) else "applied"


def _dumps(data: Any) -> bytes:
    return json.dumps(data).encode()  # NaN and ±Infinity as JS literals, as some clients send them


class Fuzzer:
    """Builds the payloads from ``real`` (MovieLens rows as dicts), deterministically per seed."""

    def __init__(self, real: list[dict[str, Any]], *, run: str, base_ts: float, partitions: int, seed_: int = 0) -> None:
        self.real, self.run, self.base_ts, self.partitions = real, run, base_ts, partitions
        self.rnd = random.Random(seed_)
        self.n = 0

    # -- helpers ----------------------------------------------------------------------
    def _event(self) -> dict[str, Any]:
        """A real event with a fresh id and a time near ``base_ts``."""
        self.n += 1
        row = dict(self.rnd.choice(self.real))
        row["event_id"] = f"{self.run}-{self.n}"
        row["ts"] = round(self.base_ts + self.rnd.uniform(-600, 600), 3)
        return row

    def _keyed(self, category: str, data: dict[str, Any]) -> Payload:
        return Payload(category, str(data["user_id"]).encode(), _dumps(data))

    # -- good -------------------------------------------------------------------------
    def real_event(self) -> Payload:
        return self._keyed("real", self._event())

    def real_variant(self) -> Payload:
        e = self._event()
        kind = self.rnd.choice(EVENT_TYPES)
        e["type"] = kind
        if kind != "rating":
            e.pop("rating")
        else:
            e["rating"] = self.rnd.choice([0, 0.0, 5, 5.0, 2.5, "3.5"])
        if kind == "search":
            e.pop("item_id")
            e["query"] = self.rnd.choice(["matrix", "q" * MAX_QUERY_LENGTH, "film noir ✓", "\u00e9t\u00e9"])
        variant = self.rnd.randrange(4)
        if variant == 0:
            e["user_id"] = int(e["user_id"])  # integer ids, as data sets have them
            e["item_id"] = int(e["item_id"]) if "item_id" in e else None
            if e["item_id"] is None:
                e.pop("item_id")
        elif variant == 1:
            offset = self.rnd.choice([0, 60, -330, 840])
            tz = timezone(timedelta(minutes=offset))
            e["ts"] = datetime.fromtimestamp(e["ts"], tz=tz).isoformat()
        elif variant == 2:
            e["user_id"] = f"ユーザー{e['user_id']}"  # non-ASCII ids, keyed in UTF-8
        else:
            e["user_id"] = "u" * MAX_ID_LENGTH if self.rnd.random() < 0.1 else f"{e['user_id']}-x"
        return Payload("real_variant", str(e["user_id"]).encode(), _dumps(e))

    def wrong_partition(self) -> Payload:
        e = self._event()
        home = user_partition(str(e["user_id"]), self.partitions)
        other = self.rnd.choice([p for p in range(self.partitions) if p != home])
        return Payload("wrong_partition", str(e["user_id"]).encode(), _dumps(e), partition=other)

    # -- bad --------------------------------------------------------------------------
    def broken_json(self) -> Payload:
        e = self._event()
        text = json.dumps(e, ensure_ascii=self.rnd.random() < 0.5)
        how = self.rnd.randrange(5)
        if how == 0:
            text = text[: self.rnd.randrange(len(text))]  # cut short
        elif how == 1:
            text = text.replace("}", "", 1)
        elif how == 2:
            text = text + self.rnd.choice(["}", ",", "x", " {}"])
        elif how == 3:
            text = text.replace('"', "'")
        else:
            text = text.replace(":", "", 1)
        return Payload("broken_json", str(e["user_id"]).encode(), text.encode())

    def not_an_object(self) -> Payload:
        e = self._event()
        value = self.rnd.choice([[e], e["event_id"], 42, None, True, [], 1.5])
        return Payload("not_an_object", str(e["user_id"]).encode(), _dumps(value))

    WRONG: dict[str, list[Any]] = {
        "event_id": [[1], {"a": 1}, True, 1.5, None],
        "user_id": [[1], {"a": 1}, True, 1.5, None],
        "item_id": [[1], {"a": 1}, True, 1.5],
        "type": [3, None, [], True, {"t": "view"}],
        "rating": ["four", [], {}, True, False, "", [4.0]],
        "ts": ["yesterday", [], {}, True, None, "2024-13-45", ""],
    }

    def wrong_type(self) -> Payload:
        e = self._event()
        name = self.rnd.choice(list(self.WRONG))
        e[name] = self.rnd.choice(self.WRONG[name])
        key = str(e["user_id"]).encode() if isinstance(e["user_id"], str) else b"u"
        return Payload("wrong_type", key, _dumps(e))

    def missing_field(self) -> Payload:
        e = self._event()
        e.pop(self.rnd.choice(["event_id", "user_id", "type", "ts", "item_id", "rating"]))
        return Payload("missing_field", str(e.get("user_id", "u")).encode(), _dumps(e))

    def extra_field(self) -> Payload:
        e = self._event()
        e[self.rnd.choice(["extra", "userId", "Rating", "price", "", "__proto__"])] = self.rnd.choice([1, "x", None, [], {}])
        return self._keyed("extra_field", e)

    def inconsistent(self) -> Payload:
        e = self._event()
        how = self.rnd.randrange(4)
        if how == 0:
            e["type"] = self.rnd.choice(["view", "click", "purchase", "add_to_cart"])  # keeps its rating
        elif how == 1:
            e["query"] = "stray"  # a query on a rating
        elif how == 2:
            e["type"], e["query"] = "search", "q"  # a search with a rating (and an item)
            e.pop("item_id")
        else:
            e.pop("rating")
            e["type"] = "search"  # a search without a query
        return self._keyed("inconsistent", e)

    def huge_string(self) -> Payload:
        e = self._event()
        how = self.rnd.randrange(5)
        if how == 0:
            e["user_id"] = "u" * self.rnd.randint(MAX_ID_LENGTH + 1, 1000)
        elif how == 1:
            e["item_id"] = "i" * self.rnd.randint(MAX_ID_LENGTH + 1, 1000)
        elif how == 2:
            e["event_id"] = "e" * self.rnd.randint(MAX_ID_LENGTH + 1, 3000)
        elif how == 3:
            e.pop("rating")
            e.pop("item_id")
            e["type"], e["query"] = "search", "q" * self.rnd.randint(MAX_QUERY_LENGTH + 1, 3000)
        else:
            e["event_id"] = "e" * self.rnd.randint(MAX_BYTES, 200_000)  # over the size limit
        return self._keyed("huge_string", e)

    def nan_or_out_of_range(self) -> Payload:
        e = self._event()
        if self.rnd.random() < 0.7:
            e["rating"] = self.rnd.choice([float("nan"), float("inf"), float("-inf"), -0.5, 5.01, 6, 1e308, -1e308, 10**30])
        else:
            e["ts"] = self.rnd.choice([1e20, -1e20, float("nan"), float("inf"), 253402300800, -62135596801,
                                       "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-14:00", 2**63])
        return self._keyed("nan_or_out_of_range", e)

    def unknown_type(self) -> Payload:
        e = self._event()
        e["type"] = self.rnd.choice(["like", "VIEW", "", "view ", "rate", "unknown", "ratings"])
        return self._keyed("unknown_type", e)

    def control_chars(self) -> Payload:
        e = self._event()
        name = self.rnd.choice(["event_id", "user_id", "item_id"])
        e[name] = str(e[name]) + self.rnd.choice(CONTROL_CHARS) + "x"
        return Payload("control_chars", str(e["user_id"]).encode("utf-8", "replace"), _dumps(e))

    def binary_garbage(self) -> Payload:
        e = self._event()
        raw = _dumps(e)
        how = self.rnd.randrange(4)
        if how == 0:
            value = self.rnd.randbytes(self.rnd.randint(0, 300))
        elif how == 1:
            value = gzip.compress(raw)
        elif how == 2:
            value = json.dumps(e).encode("utf-16")
        else:
            flipped = bytearray(raw)
            for _ in range(self.rnd.randint(1, 4)):
                flipped[self.rnd.randrange(len(flipped))] = self.rnd.randrange(0x80, 0x100)
            value = bytes(flipped)
        return Payload("binary_garbage", str(e["user_id"]).encode(), value)

    def missing_key(self) -> Payload:
        return Payload("missing_key", None, _dumps(self._event()))

    def key_mismatch(self) -> Payload:
        e = self._event()
        user = str(e["user_id"])
        key = self.rnd.choice([b"", (user + " ").encode(), b"\xff\xfe" + user.encode(), f"not-{user}".encode(),
                               f"{self.rnd.choice(self.real)['user_id']}-other".encode()])
        return Payload("key_mismatch", key, _dumps(e))

    def build(self, counts: dict[str, int] = COUNTS) -> list[Payload]:
        """The crafted categories, in a shuffled order (the hypothesis ones: :func:`hypothesis_payloads`)."""
        makers: dict[str, Callable[[], Payload]] = {
            "real": self.real_event, "real_variant": self.real_variant, "wrong_partition": self.wrong_partition,
            "broken_json": self.broken_json, "not_an_object": self.not_an_object, "wrong_type": self.wrong_type,
            "missing_field": self.missing_field, "extra_field": self.extra_field, "inconsistent": self.inconsistent,
            "huge_string": self.huge_string, "nan_or_out_of_range": self.nan_or_out_of_range,
            "unknown_type": self.unknown_type, "control_chars": self.control_chars,
            "binary_garbage": self.binary_garbage, "missing_key": self.missing_key, "key_mismatch": self.key_mismatch,
        }
        out = [make() for category, make in makers.items() for _ in range(counts.get(category, 0))]
        self.rnd.shuffle(out)
        return out


# -- hypothesis ---------------------------------------------------------------------------
_id_text = st.text(st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)), min_size=1, max_size=40)
_json = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def valid_events(draw: st.DrawFn, base_ts: float) -> dict[str, Any]:
    kind = draw(st.sampled_from(EVENT_TYPES))
    event: dict[str, Any] = {
        "event_id": "placeholder",
        "user_id": draw(_id_text | st.integers(0, 2**62)),
        "type": kind,
        "ts": base_ts + draw(st.floats(-600, 600, allow_nan=False)),
    }
    if draw(st.booleans()):
        offset = timedelta(minutes=draw(st.integers(-14 * 60, 14 * 60)))
        event["ts"] = datetime.fromtimestamp(event["ts"], tz=timezone(offset)).isoformat()
    if kind != "search":
        event["item_id"] = draw(_id_text | st.integers(0, 2**62))
    if kind == "rating":
        event["rating"] = draw(st.floats(0, 5, allow_nan=False) | st.integers(0, 5))
    if kind == "search":
        event["query"] = draw(st.text(min_size=1, max_size=MAX_QUERY_LENGTH // 4))
    return event


@st.composite
def any_records(draw: st.DrawFn, base_ts: float) -> tuple[bytes | None, Any]:
    """Anything: arbitrary JSON, or a valid event with one field swapped for arbitrary JSON,
    one dropped or one added; keyed by its user, by anything, or not at all."""
    how = draw(st.integers(0, 3))
    if how == 0:
        data: Any = draw(_json)
    else:
        data = draw(valid_events(base_ts))
        name = draw(st.sampled_from(sorted(data)))
        if how == 1:
            data[name] = draw(_json)
        elif how == 2:
            del data[name]
        else:
            data[draw(st.text(max_size=12))] = draw(_json)
    user = data.get("user_id") if isinstance(data, dict) else None
    key = draw(st.sampled_from([
        str(user).encode("utf-8", "replace") if user is not None else None, None, draw(st.binary(max_size=12)),
    ]))
    return key, data


def draw_many(strategy: st.SearchStrategy[Any], n: int, seed_: int) -> list[Any]:
    """``n`` examples of ``strategy``, the same ones for the same seed (hypothesis's generator)."""
    out: list[Any] = []

    @seed(seed_)
    @settings(max_examples=n, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(example: Any) -> None:
        out.append(example)

    collect()
    return out[:n]


def hypothesis_payloads(*, run: str, base_ts: float, counts: dict[str, int] = COUNTS, seed_: int = 0) -> list[Payload]:
    out = []
    for n, event in enumerate(draw_many(valid_events(base_ts), counts.get("hypothesis_valid", 0), seed_)):
        event["event_id"] = f"{run}-hv{n}"
        out.append(Payload("hypothesis_valid", str(event["user_id"]).encode(), _dumps(event)))
    for n, (key, data) in enumerate(draw_many(any_records(base_ts), counts.get("hypothesis_any", 0), seed_ + 1)):
        if isinstance(data, dict) and "event_id" in data:
            data["event_id"] = f"{run}-ha{n}"  # never a re-send of another payload
        payload = Payload("hypothesis_any", key, _dumps(data))
        if payload.verdict() == "applied":  # valid by chance: within the time window, like every good one
            data["ts"] = base_ts
            payload = Payload("hypothesis_any", key, _dumps(data))
        out.append(payload)
    return out


def real_rows(limit: int = 5000) -> list[dict[str, Any]]:
    """MovieLens ratings (models/datasets.py) as event dicts."""
    from streamrec.models.datasets import load_movielens

    frame = load_movielens().interactions.iloc[:limit]
    return [{"user_id": str(r.user_id), "item_id": str(r.item_id), "type": "rating", "rating": float(r.rating)}
            for r in frame.itertuples(index=False)]


def all_payloads(*, run: str, base_ts: float, partitions: int, counts: dict[str, int] = COUNTS,
                 seed_: int = 0) -> list[Payload]:
    """Every category, shuffled together."""
    payloads = Fuzzer(real_rows(), run=run, base_ts=base_ts, partitions=partitions, seed_=seed_).build(counts)
    payloads += hypothesis_payloads(run=run, base_ts=base_ts, counts=counts, seed_=seed_)
    random.Random(seed_ + 2).shuffle(payloads)
    return payloads

"""Message schemas for every topic streamrec reads or writes.

One importable place: the workers, the replay tool, the benchmarks and the gateway
all use these models. They live in the features layer, the lowest one that consumes
them (the user and item state updates apply ``ClickEvent``s), so that models and the
stream pipeline above read the event vocabulary from below and nothing imports upward.

Times are UTC. ``ts`` fields are timezone-aware datetimes on the wire as ISO 8601
strings; producers may also send epoch seconds (int or float), which are read as UTC.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

UserId: TypeAlias = str
ItemId: TypeAlias = str
EventId: TypeAlias = str

MAX_ID_LENGTH = 128
MAX_QUERY_LENGTH = 512
RATING_MIN = 0.0
RATING_MAX = 5.0


class EventType(StrEnum):
    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    RATING = "rating"
    SEARCH = "search"


EVENT_TYPES: tuple[str, ...] = tuple(t.value for t in EventType)


def _id_to_str(value: Any) -> Any:
    # Real datasets use integer ids; the wire format is a string either way.
    if isinstance(value, bool):
        return value  # let validation reject it: True is not an id
    if isinstance(value, int):
        return str(value)
    return value


def _to_utc(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        try:
            return datetime.fromtimestamp(value, tz=timezone.utc)
        except (OverflowError, OSError, ValueError) as exc:  # NaN, ±inf, beyond year 1..9999
            raise ValueError(f"epoch seconds {value!r} are not a time") from exc
    return value


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


Identifier = Annotated[
    str,
    BeforeValidator(_id_to_str),
    Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[^\x00-\x1f]+$"),
]
UtcTime = Annotated[datetime, BeforeValidator(_to_utc)]


class ClickEvent(BaseModel):
    """One user interaction on the ``clickstream`` topic, keyed by ``user_id``.

    ``event_id`` makes redelivery harmless: state updates skip an id they already
    applied. ``ts`` is event time (when the user acted), not processing time.
    ``rating`` is present exactly for ``rating`` events, ``query`` exactly for
    ``search`` events; ``item_id`` is required for every type except ``search``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Identifier
    user_id: Identifier
    item_id: Identifier | None = None
    type: EventType
    rating: Annotated[float | None, BeforeValidator(_not_bool)] = Field(default=None, ge=RATING_MIN, le=RATING_MAX,
                                                                       allow_inf_nan=False)
    query: str | None = Field(default=None, min_length=1, max_length=MAX_QUERY_LENGTH)
    ts: UtcTime

    @field_validator("ts")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        try:
            return value.astimezone(timezone.utc)
        except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+01:00: before year 1 in UTC
            raise ValueError("not a time in years 1..9999 UTC") from exc

    @model_validator(mode="after")
    def _fields_match_type(self) -> ClickEvent:
        if self.type is EventType.RATING and self.rating is None:
            raise ValueError("rating events need a rating")
        if self.type is not EventType.RATING and self.rating is not None:
            raise ValueError(f"{self.type.value} events carry no rating")
        if self.type is EventType.SEARCH and self.query is None:
            raise ValueError("search events need a query")
        if self.type is not EventType.SEARCH and self.query is not None:
            raise ValueError(f"{self.type.value} events carry no query")
        if self.type is not EventType.SEARCH and self.item_id is None:
            raise ValueError(f"{self.type.value} events need an item_id")
        return self

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


RejectReason = Literal[
    "payload_too_large",
    "invalid_encoding",
    "invalid_json",
    "not_an_object",
    "missing_field",
    "unknown_field",
    "invalid_field",
    "inconsistent_fields",
    "missing_key",  # a valid event whose record has no key (the key picks the user's partition)
    "key_mismatch",  # a valid event whose record key is not its user_id
    "late",  # valid, but older than the user's newest event by more than the allowed lateness
]


class Rejection(BaseModel):
    """Why a payload was refused. ``reason`` is a stable machine-readable code."""

    model_config = ConfigDict(frozen=True)

    reason: RejectReason
    field: str | None = None
    detail: str


def parse_event(payload: bytes, *, max_bytes: int, allow_unknown_fields: bool = False) -> ClickEvent | Rejection:
    """Validate one raw ``clickstream`` payload. Never raises on bad input."""
    if len(payload) > max_bytes:
        return Rejection(reason="payload_too_large", detail=f"{len(payload)} bytes > limit {max_bytes}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(reason="invalid_encoding", detail=str(exc))
    try:
        data = json.loads(text)
    except ValueError as exc:
        return Rejection(reason="invalid_json", detail=str(exc))
    if not isinstance(data, dict):
        return Rejection(reason="not_an_object", detail=f"expected a JSON object, got {type(data).__name__}")
    if allow_unknown_fields:
        data = {k: v for k, v in data.items() if k in ClickEvent.model_fields}
    try:
        return ClickEvent.model_validate(data)
    except ValidationError as exc:
        return _rejection_from(exc)


def parse_record(key: bytes | None, payload: bytes, *, max_bytes: int,
                 allow_unknown_fields: bool = False) -> ClickEvent | Rejection:
    """Validate one ``clickstream`` record: its payload (:func:`parse_event`), then its key,
    which must be the event's ``user_id`` (UTF-8): the key decides the partition, and a
    user's events must all reach the same one. Never raises on bad input."""
    parsed = parse_event(payload, max_bytes=max_bytes, allow_unknown_fields=allow_unknown_fields)
    if isinstance(parsed, Rejection):
        return parsed
    if key is None:
        return Rejection(reason="missing_key", field="key", detail="clickstream records are keyed by user_id")
    if key != parsed.user_id.encode():
        shown = key[:MAX_ID_LENGTH].decode("utf-8", errors="replace")
        return Rejection(reason="key_mismatch", field="key",
                         detail=f"record key {shown!r} is not the event's user_id {parsed.user_id!r}")
    return parsed


def _rejection_from(exc: ValidationError) -> Rejection:
    first = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    kind = first["type"]
    reason: RejectReason
    if kind == "missing":
        reason = "missing_field"
    elif kind == "extra_forbidden":
        reason = "unknown_field"
    elif not first["loc"]:
        reason = "inconsistent_fields"
    else:
        reason = "invalid_field"
    return Rejection(reason=reason, field=field, detail=first["msg"])


class DeadLetter(BaseModel):
    """A refused payload on ``clickstream.dlq``, keyed as it was received.

    The raw payload is kept whole: as text when it is valid UTF-8, else base64.
    """

    reason: str
    field: str | None = None
    detail: str
    payload: str
    payload_encoding: Literal["utf-8", "base64"]
    source_topic: str
    partition: int | None = None
    offset: int | None = None
    received_at: datetime

    @classmethod
    def build(
        cls,
        payload: bytes,
        rejection: Rejection,
        *,
        source_topic: str,
        partition: int | None,
        offset: int | None,
    ) -> DeadLetter:
        try:
            text, encoding = payload.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(payload).decode("ascii"), "base64"
        return cls(
            reason=rejection.reason,
            field=rejection.field,
            detail=rejection.detail,
            payload=text,
            payload_encoding=encoding,  # type: ignore[arg-type]
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            received_at=datetime.now(timezone.utc),
        )

    def raw_payload(self) -> bytes:
        if self.payload_encoding == "base64":
            return base64.b64decode(self.payload)
        return self.payload.encode("utf-8")


class ItemMsg(BaseModel):
    """One item-side update, keyed by ``item_id`` on the repartition topic.

    ``event_type`` is set for the event's own item (counts, ratings, popularity and
    co-visits with ``covisited``, the user's recent items); it is ``None`` for a
    co-visit-only message to one of those recent items (``covisit_symmetric``),
    whose ``covisited`` is the event's item.
    ``msg_id`` is the event id: each item gets at most one message per event.
    ``source`` is the (partition, offset) of the ``clickstream`` record it came
    from, when the caller passed it to :func:`~streamrec.features.user_state.apply_user_event`. The item side
    then deduplicates by a per-source-partition high-water mark: exact under any
    redelivery, in constant memory, and never drops a message for arriving late
    (messages of different partitions interleave freely on the item side).
    Without ``source`` the item side falls back to the event-id window.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    msg_id: str
    item_id: ItemId
    ts_ms: int
    event_type: EventType | None = None
    rating: float | None = None
    covisited: list[ItemId] = Field(default_factory=list)
    source: tuple[int, int] | None = None

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


ITEM_BATCH: TypeAdapter[list[ItemMsg]] = TypeAdapter(list[ItemMsg])
"""One message on the repartition topic: a JSON list of one item partition's ``ItemMsg``s."""


class RecommendTask(BaseModel):
    """A triggering event and its user's state, from the features role to the recommend role
    (the ``to_recommend`` topic, keyed by ``user_id``)."""

    cause: ClickEvent
    state: dict[str, Any]  # UserState.to_dict()
    enqueued_at: float  # epoch s, when the features role handed it over
    covers: list[EventId] = Field(default_factory=list)  # the user's earlier events this task supersedes


class RecommendedItem(BaseModel):
    item_id: ItemId
    score: float
    source: str


class StageLatency(BaseModel):
    """Milliseconds spent in each stage of producing one recommendation list."""

    candidates: float = 0.0
    features: float = 0.0
    scoring: float = 0.0
    total: float = 0.0
    event_to_emit: float | None = None
    # where event_to_emit went before ranking (absent for a list released by the debounce timer):
    ingest: float | None = None  # the event's ts → its batch began in the worker (client, broker, Faust, batching, queueing)
    update: float | None = None  # its batch began → ranking began (validate, state, feature and item-side writes)


class Recommendation(BaseModel):
    """One ranked list on ``recommendations``, keyed by ``user_id``."""

    user_id: UserId
    items: list[RecommendedItem]
    model_version: str
    cause_event_id: EventId
    event_ts: datetime
    emitted_at: datetime
    latency_ms: StageLatency
    worker_id: str
    # earlier triggering events of this user whose effect this list also reflects (several in
    # one batch, or held by the debounce): each got no list of its own
    covers: list[EventId] = Field(default_factory=list)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class Percentiles(BaseModel):
    count: int
    p50: float
    p95: float
    p99: float
    max: float


class MetricsSnapshot(BaseModel):
    """One window of a worker's counters on ``metrics``, keyed by ``worker_id``."""

    worker_id: str
    window_start: datetime
    window_end: datetime
    counts: dict[str, int]
    latency_ms: dict[str, Percentiles]
    events_per_s: float
    dlq_count: int
    lag: dict[str, int] = Field(default_factory=dict)
    model_version: str
    provider: str

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

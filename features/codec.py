"""Feast's Redis byte layout, written and read without importing feast.

``import feast`` costs 5-8 s and ~360 MB, too much for the worker's hot path, so
this module re-implements the few encodings Feast's Redis online store uses
(feast 0.67, its ``feast/infra/online_stores/redis.py``):

* hash key: ``serialize_entity_key`` v3 of one STRING join key, then the project;
* hash field per feature: ``mmh3_32("<view>:<feature>")`` as 4 little-endian bytes;
* hash value: a serialized ``feast.types.Value`` protobuf (the oneof member that
  matches the feature's type);
* ``_ts:<view>``: a serialized ``google.protobuf.Timestamp``.

``tests/features/test_codec.py`` checks every encoding byte for byte against
Feast's own functions and protobuf classes. Lists and int64 go through protobuf's
C implementation (upb) with a private descriptor of the wire-compatible subset of
``feast.types.Value`` (own pool and names: no clash when feast is loaded too).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import mmh3
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from streamrec.features.schema import DType, FeatureValue

_STRING_TYPE = 2  # feast.types.ValueType.STRING
_U32 = struct.Struct("<I")
_F64 = struct.Struct("<d")

# protobuf tags (field number << 3 | wire type) of feast.types.Value's oneof members
_TAG_STRING = 0x12  # 2, length-delimited
_TAG_INT64 = 0x20  # 4, varint
_TAG_DOUBLE = 0x29  # 5, 64-bit
_TAG_STRING_LIST = 0x62  # 12, length-delimited StringList{repeated string val = 1}
_TAG_DOUBLE_LIST = 0x7A  # 15, length-delimited DoubleList{repeated double val = 1 [packed]}
_TAG_REPEATED = 0x0A  # field 1 inside the list messages, length-delimited


def _value_subset_class() -> Any:
    """``feast.types.Value`` restricted to the members this layer writes, same field numbers."""
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="streamrec/feast_value_subset.proto", package="streamrec.feastwire", syntax="proto3"
    )
    for name, member in (("StringList", field.TYPE_STRING), ("DoubleList", field.TYPE_DOUBLE)):
        proto.message_type.add(name=name).field.add(name="val", number=1, type=member, label=field.LABEL_REPEATED)
    value = proto.message_type.add(name="Value")
    value.oneof_decl.add(name="val")
    for name, number, kind, type_name in (
        ("string_val", 2, field.TYPE_STRING, ""),
        ("int64_val", 4, field.TYPE_INT64, ""),
        ("double_val", 5, field.TYPE_DOUBLE, ""),
        ("string_list_val", 12, field.TYPE_MESSAGE, ".streamrec.feastwire.StringList"),
        ("double_list_val", 15, field.TYPE_MESSAGE, ".streamrec.feastwire.DoubleList"),
    ):
        member = value.field.add(name=name, number=number, type=kind, label=field.LABEL_OPTIONAL, oneof_index=0)
        if type_name:
            member.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("streamrec.feastwire.Value"))


_Value = _value_subset_class()


def _key_prefix(join_key: str) -> bytes:
    key = join_key.encode()
    return _U32.pack(1) + _U32.pack(_STRING_TYPE) + _U32.pack(len(key)) + key + _U32.pack(_STRING_TYPE)


_KEY_PREFIXES: dict[str, bytes] = {}


def entity_key(join_key: str, entity_id: str, project: str) -> bytes:
    """The Redis hash key Feast uses for one STRING join key (serialization v3)."""
    prefix = _KEY_PREFIXES.get(join_key)
    if prefix is None:
        prefix = _KEY_PREFIXES[join_key] = _key_prefix(join_key)
    value = entity_id.encode()
    return prefix + _U32.pack(len(value)) + value + project.encode()


def field_key(view: str, feature: str) -> bytes:
    return _U32.pack(mmh3.hash(f"{view}:{feature}", signed=False))


def timestamp_field(view: str) -> bytes:
    return f"_ts:{view}".encode()


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return bytes((value,))
    value &= 0xFFFFFFFFFFFFFFFF  # negative int64: two's complement, 10 bytes
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _length_delimited(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + _varint(len(payload)) + payload


def _encode_float64(value: Any) -> bytes:
    return b"\x29" + _F64.pack(float(value))


def _encode_int64(value: Any) -> bytes:
    value = int(value)
    if 0 <= value < 0x80:  # most counters: one varint byte
        return bytes((_TAG_INT64, value))
    return _Value(int64_val=value).SerializeToString()  # type: ignore[no-any-return]


def _encode_string(value: Any) -> bytes:
    return _length_delimited(_TAG_STRING, str(value).encode())


def _encode_string_list(values: Any) -> bytes:
    message = _Value()
    message.string_list_val.val.extend(values)
    if not values:
        message.string_list_val.SetInParent()
    return message.SerializeToString()  # type: ignore[no-any-return]


def _encode_float64_list(values: Any) -> bytes:
    packed = struct.pack(f"<{len(values)}d", *values)
    inner = _length_delimited(_TAG_REPEATED, packed) if values else b""
    return _length_delimited(_TAG_DOUBLE_LIST, inner)


_ENCODERS: dict[DType, Callable[[Any], bytes]] = {
    "float64": _encode_float64,
    "int64": _encode_int64,
    "string": _encode_string,
    "string_list": _encode_string_list,
    "float64_list": _encode_float64_list,
}


def encode_value(dtype: DType, value: FeatureValue) -> bytes:
    """Serialize ``value`` as the ``feast.types.Value`` Feast writes for ``dtype``."""
    return _ENCODERS[dtype](value)


def decode_value(data: bytes | None) -> FeatureValue | None:
    """Parse a serialized ``feast.types.Value``; ``None`` for a missing/empty value.

    Raises ``ValueError`` on a Value kind this layer never writes.
    """
    if not data:
        return None
    tag = data[0]
    if tag == _TAG_DOUBLE:
        return _F64.unpack_from(data, 1)[0]
    if tag == _TAG_INT64:
        if len(data) == 2:  # 0..127: most counters
            return data[1]
        return _signed64(_read_varint(data, 1)[0])
    length, pos = _read_varint(data, 1)
    if tag == _TAG_STRING:
        return data[pos : pos + length].decode()
    if tag == _TAG_STRING_LIST:
        return list(_Value.FromString(data).string_list_val.val)
    if tag == _TAG_DOUBLE_LIST:
        return _decode_doubles(data, pos, pos + length)
    raise ValueError(f"unsupported feast Value tag 0x{tag:02x}")


def _decode_float64(data: bytes | None) -> FeatureValue | None:
    if data and data[0] == _TAG_DOUBLE:
        return _F64.unpack_from(data, 1)[0]  # type: ignore[no-any-return]
    return decode_value(data)


def _decode_int64(data: bytes | None) -> FeatureValue | None:
    if data and data[0] == _TAG_INT64:
        return data[1] if len(data) == 2 else _signed64(_read_varint(data, 1)[0])
    return decode_value(data)


class _ListMemo:
    """Decoded list values by their serialized bytes, bounded (cleared when full).

    A list value (covisit neighbours, recent items) is re-read far more often than it
    changes, and decoding one costs ~10x a scalar; identical bytes decode to an equal
    list, so each distinct value is decoded once. Callers get a fresh copy each time.
    """

    def __init__(self, max_entries: int = 4096) -> None:  # ~2 KB an entry at 30 ids
        self._max = max_entries
        self._lists: dict[bytes, list[Any]] = {}

    def __call__(self, data: bytes | None) -> FeatureValue | None:
        if not data:
            return None
        found = self._lists.get(data)
        if found is None:
            decoded = decode_value(data)
            if not isinstance(decoded, list):  # not a list value after all: no memo
                return decoded
            if len(self._lists) >= self._max:
                self._lists.clear()
            found = self._lists[data] = decoded
        return list(found)


_DECODERS: dict[DType, Callable[[bytes | None], FeatureValue | None]] = {
    "float64": _decode_float64,
    "int64": _decode_int64,
    "string_list": _ListMemo(),
    "float64_list": _ListMemo(),
}


def decoder(dtype: DType) -> Callable[[bytes | None], FeatureValue | None]:
    """``decode_value`` with a fast path for the Value kind ``dtype`` is stored as
    (same results for every input: anything else takes the general path)."""
    return _DECODERS.get(dtype, decode_value)


def _decode_doubles(data: bytes, pos: int, end: int) -> list[float]:
    out: list[float] = []
    while pos < end:  # packed chunks (normal) or single 0x09-tagged values (legal, unpacked)
        if data[pos] == _TAG_REPEATED:
            length, pos = _read_varint(data, pos + 1)
            out.extend(struct.unpack_from(f"<{length // 8}d", data, pos))
            pos += length
        else:
            out.append(_F64.unpack_from(data, pos + 1)[0])
            pos += 9
    return out


def encode_timestamp(ms: int) -> bytes:
    """A serialized ``google.protobuf.Timestamp`` for ``ms`` since the epoch (UTC)."""
    seconds, rem_ms = divmod(ms, 1000)
    out = b""
    if seconds:
        out += b"\x08" + _varint(seconds)
    if rem_ms:
        out += b"\x10" + _varint(rem_ms * 1_000_000)
    return out


def decode_timestamp_ms(data: bytes | None) -> int | None:
    """Milliseconds since the epoch from a serialized Timestamp (sub-ms truncated)."""
    if data is None:
        return None
    seconds = nanos = 0
    pos = 0
    while pos < len(data):
        tag = data[pos]
        value, pos = _read_varint(data, pos + 1)
        if tag == 0x08:
            seconds = _signed64(value)
        elif tag == 0x10:
            nanos = value
    return seconds * 1000 + nanos // 1_000_000

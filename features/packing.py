"""Feature values packed as RESP bulk strings of their serialized Feast ``Value``, per type."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from streamrec.features import codec, resp
from streamrec.features.schema import DType

_F64_BULK = struct.Struct("<d")
_SMALL_INT_BULKS = tuple(resp.bulk(codec.encode_value("int64", n)) for n in range(4096))


def _pack_float64(value: Any) -> bytes:
    # the RESP bulk of a serialized Value{double_val}: always 9 bytes
    return b"$9\r\n\x29" + _F64_BULK.pack(value) + b"\r\n"


def _pack_int64(value: Any) -> bytes:
    if 0 <= value < 4096:  # counters: prepacked
        return _SMALL_INT_BULKS[value]
    return resp.bulk(codec.encode_value("int64", value))


def _packer(dtype: DType) -> Callable[[Any], bytes]:
    def pack(value: Any) -> bytes:
        return resp.bulk(codec.encode_value(dtype, value))

    return pack


# value -> the RESP bulk string of its serialized feast Value, per feature type
VALUE_PACKERS: dict[DType, Callable[[Any], bytes]] = {
    "float64": _pack_float64,
    "int64": _pack_int64,
    "string": _packer("string"),
    "string_list": _packer("string_list"),
    "float64_list": _packer("float64_list"),
}

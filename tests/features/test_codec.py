"""The feast-free codec against Feast's own functions and protobuf classes, byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamrec.features import codec

feast_helpers = pytest.importorskip("feast.infra.online_stores.helpers")
from feast.protos.feast.types.EntityKey_pb2 import EntityKey  # noqa: E402
from feast.protos.feast.types.Value_pb2 import DoubleList, StringList, Value  # noqa: E402
from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402

text = st.text(max_size=20)
doubles = st.floats(allow_nan=False)
int64s = st.integers(-(2**63), 2**63 - 1)


@given(doubles)
def test_float64(value: float) -> None:
    assert codec.encode_value("float64", value) == Value(double_val=value).SerializeToString()
    assert codec.decode_value(Value(double_val=value).SerializeToString()) == value


@given(int64s)
def test_int64(value: int) -> None:
    assert codec.encode_value("int64", value) == Value(int64_val=value).SerializeToString()
    assert codec.decode_value(Value(int64_val=value).SerializeToString()) == value


@given(st.one_of(doubles.map(lambda v: Value(double_val=v)), int64s.map(lambda v: Value(int64_val=v)),
                 text.map(lambda v: Value(string_val=v)), st.just(Value()),
                 st.lists(text, max_size=5).map(lambda v: Value(string_list_val=StringList(val=v))),
                 st.lists(doubles, max_size=5).map(lambda v: Value(double_list_val=DoubleList(val=v)))))
def test_typed_decoders_agree_with_the_general_one(value: Value) -> None:
    raw = value.SerializeToString()
    for dtype in ("float64", "int64", "string", "string_list", "float64_list"):
        assert codec.decoder(dtype)(raw) == codec.decode_value(raw)  # type: ignore[arg-type]
    assert codec.decoder("int64")(None) is None and codec.decoder("float64")(None) is None


def test_list_decoders_hand_out_fresh_copies_and_stay_bounded() -> None:
    decode = codec._ListMemo(max_entries=2)
    raw = codec.encode_value("string_list", ["a", "b"])
    first = decode(raw)
    assert first == ["a", "b"]
    first.append("mutated")  # the caller's copy: the next decode is unaffected
    assert decode(raw) == ["a", "b"]
    for n in range(5):
        assert decode(codec.encode_value("string_list", [str(n)])) == [str(n)]
    assert len(decode._lists) <= 2


@given(text)
def test_string(value: str) -> None:
    assert codec.encode_value("string", value) == Value(string_val=value).SerializeToString()
    assert codec.decode_value(Value(string_val=value).SerializeToString()) == value


@given(st.lists(text, max_size=8))
def test_string_list(values: list[str]) -> None:
    proto = Value(string_list_val=StringList(val=values)).SerializeToString()
    assert codec.encode_value("string_list", values) == proto
    assert codec.decode_value(proto) == values


@given(st.lists(doubles, max_size=8))
def test_float64_list(values: list[float]) -> None:
    proto = Value(double_list_val=DoubleList(val=values)).SerializeToString()
    assert codec.encode_value("float64_list", values) == proto
    assert codec.decode_value(proto) == values


@given(st.integers(-(10**12), 10**14))
def test_timestamp(ms: int) -> None:
    proto = Timestamp()
    proto.FromMilliseconds(ms)
    assert codec.encode_timestamp(ms) == proto.SerializeToString()
    assert codec.decode_timestamp_ms(proto.SerializeToString()) == ms


@given(st.text(min_size=1, max_size=30), st.sampled_from(["streamrec", "p_1"]))
def test_entity_key_and_field_key(entity_id: str, project: str) -> None:
    key = EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=entity_id)])
    assert codec.entity_key("user_id", entity_id, project) == feast_helpers._redis_key(project, key)
    assert codec.field_key("item_features", entity_id) == feast_helpers._mmh3(f"item_features:{entity_id}")


def test_missing_value_decodes_to_none() -> None:
    assert codec.decode_value(None) is None and codec.decode_value(b"") is None


def test_unsupported_value_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        codec.decode_value(Value(bool_val=True).SerializeToString())

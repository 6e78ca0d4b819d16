"""The ranker with the user's recent items: offline inputs equal the stream's, the
serving graph equals the net, and the published model scores online as offline."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.features.config import FeatureConfig
from streamrec.features.messages import ClickEvent, EventType
from streamrec.features.user_state import UserState, UserUpdate, apply_user_event
from streamrec.models.artifact import publish_model
from streamrec.models.config import ModelConfig
from streamrec.models.encoding import Inputs
from streamrec.models.export import export_onnx, run_onnx
from streamrec.models.features import EXPLICIT_FEATURES
from streamrec.models.metrics import rmse
from streamrec.models.onnx_recommender import OnnxRecommender
from streamrec.models.quantize import quantize_int8_dynamic
from streamrec.models.recent import PAD, recent_positions
from streamrec.models.recent_ranker import RecentRanker
from streamrec.models.recommenders import NeuralRecommender, dense_transform
from streamrec.models.registry import ModelRegistry
from streamrec.models.scorer import ScoreBatch, open_scorer
from streamrec.tools.bench_scoring import session_ops
from tests.models.conftest import FAST


def replayed_recent(history: pd.DataFrame, user: str, ts: int, keep: int) -> list[str]:
    """The user's recent items as the worker's state holds them after every event
    before ``ts`` (features/user_state.py, in event-time order)."""
    state, cfg = UserState(), FeatureConfig(recent_items=keep)
    mine = history[(history["user_id"] == user) & (history["ts"] < ts)]
    for n, row in enumerate(mine.itertuples(index=False)):
        event = ClickEvent(event_id=f"e{n}", user_id=user, item_id=row.item_id, type=EventType.CLICK,
                           ts=datetime.fromtimestamp(row.ts, timezone.utc))
        assert isinstance(apply_user_event(state, event, cfg), UserUpdate)
    return [r.item_id for r in state.recent]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), keep=st.integers(1, 6))
def test_recent_positions_are_the_streams_recent_items_before_each_time(seed: int, keep: int) -> None:
    rng = np.random.default_rng(seed)
    n = 60  # few users, items and times: repeats and ties in event time on purpose
    history = pd.DataFrame({"user_id": rng.integers(0, 4, n).astype(str), "item_id": rng.integers(0, 9, n).astype(str),
                            "ts": rng.integers(0, 30, n)}).sort_values("ts", kind="stable").reset_index(drop=True)
    query = pd.DataFrame({"user_id": rng.integers(0, 5, 20).astype(str), "ts": rng.integers(0, 32, 20)})

    got = recent_positions(history, query, keep)

    for row, (user, ts) in enumerate(zip(query["user_id"], query["ts"])):
        assert [history["item_id"][p] for p in got[row] if p != PAD] == replayed_recent(history, user, int(ts), keep)


def random_recent_ranker(seed: int = 0) -> RecentRanker:
    rng = np.random.default_rng(seed)
    train = rng.uniform(0, 50, (200, len(EXPLICIT_FEATURES))).astype(np.float32)
    torch.manual_seed(seed)
    net = RecentRanker(30, 40, 8, (16, 8), dense_transform(train, EXPLICIT_FEATURES), global_mean=3.5)
    with torch.no_grad():  # small at init: would hide a dropped term; row 0 is padding
        net.implicit.weight[1:].normal_(std=0.3)
    return net.eval()


def test_the_serving_graph_scores_as_the_net_and_padding_adds_nothing() -> None:
    net = random_recent_ranker()
    user, item = torch.tensor([1, 2, 3, 0]), torch.tensor([4, 5, 6, 7])
    dense = torch.tensor([[3.5, 4.0, 2.0, 10.0]] * 4)
    recent = torch.tensor([[9, 8, 0, 0], [9, 0, 0, 0], [0, 0, 0, 0], [1, 2, 3, 4]])

    with torch.inference_mode():
        scores, served = net(user, item, dense, recent), net.for_export()(user, item, dense, recent, torch.arange(4))
        per_user = net.for_export()(user, item, dense, recent[[3, 0]], torch.tensor([1, 1, 1, 0]))
        unpadded = net(user[:2], item[:2], dense[:2], torch.tensor([[9, 8], [9, 9]]))
        without = net(user[:1], item[:1], dense[:1], torch.tensor([[9, 0, 0, 0]]))

    torch.testing.assert_close(served, scores, atol=1e-5, rtol=1e-5)
    with torch.inference_mode():
        expected = net(user, item, dense, recent[[0, 0, 0, 3]])
    torch.testing.assert_close(per_user, expected, atol=1e-5, rtol=1e-5)  # rows read lists by position
    assert abs(float(unpadded[0] - scores[0])) < 1e-5  # [9, 8, pad, pad] is [9, 8]
    assert abs(float(without[0] - scores[0])) > 1e-4  # and item 8 did count


@pytest.fixture(scope="module")
def recent_model(split: tuple[pd.DataFrame, pd.DataFrame]) -> NeuralRecommender:
    model = NeuralRecommender("recent", FAST.model_copy(update={"recent_items": 5}), progress=False)
    model.fit(split[0])
    return model


def test_published_model_scores_online_from_the_users_recent_items_as_offline(
    recent_model: NeuralRecommender, split: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    train, test = split
    registry = ModelRegistry(tmp_path / "models")
    cfg = ModelConfig(registry_dir=registry.root, train=recent_model.cfg)
    version = publish_model(recent_model, registry, cfg, recent_model.encoder.encode(test), {"dataset": "synthetic"}, {})
    scorer = open_scorer(registry, version, "cpu", "fp32")
    rows = test.iloc[:40]
    dense = recent_model.encoder.encode(rows).dense
    # what the worker's state holds at each row's time: the events the stream saw before it
    recent = {f"{u}@{t}": replayed_recent(train, u, int(t), 5) for u, t in zip(rows["user_id"], rows["ts"])}

    online = [float(scorer.score(ScoreBatch(u, [i], dense[r : r + 1], {u: recent[f"{u}@{t}"]}))[0])
              for r, (u, i, t) in enumerate(zip(rows["user_id"], rows["item_id"], rows["ts"]))]

    meta = registry.metadata(version)
    assert meta["recent_items"] == 5 and meta["inputs"]["recent"]["shape"] == ["users", 5]
    assert meta["variants"]["int8"]["accepted"]
    np.testing.assert_allclose(online, recent_model.predict(rows), atol=1e-4)


def test_a_batch_of_several_users_reads_each_users_own_recent_items(
    recent_model: NeuralRecommender, split: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    registry = ModelRegistry(tmp_path / "models")
    cfg = ModelConfig(registry_dir=registry.root, train=recent_model.cfg)
    version = publish_model(recent_model, registry, cfg, recent_model.encoder.encode(split[1]), {"dataset": "synthetic"}, {})
    scorer = open_scorer(registry, version, "cpu", "fp32")
    items = recent_model.encoder.items.ids()
    dense = np.full((4, len(recent_model.features)), np.nan, np.float32)
    recent = {"a": items[:3], "b": items[10:15]}

    together = scorer.score(ScoreBatch(["a", "b", "a", "b"], items[20:24], dense, recent))
    alone = [scorer.score(ScoreBatch(u, [i], dense[:1], recent))[0] for u, i in zip("abab", items[20:24])]
    nothing = scorer.score(ScoreBatch(["a", "b", "a", "b"], items[20:24], dense))

    np.testing.assert_allclose(together, alone, atol=1e-6)
    assert np.abs(together - nothing).max() > 1e-4


def test_the_int8_variant_in_the_evaluation_scores_close_to_the_net(
    recent_model: NeuralRecommender, split: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, test = split
    served = OnnxRecommender(recent_model, "int8")

    served.fit(train)  # the model was trained on this frame: exported, not retrained

    assert served.model is recent_model and b"implicit_quantized" in served.graph
    exact, quantized = recent_model.predict(test), served.predict(test)
    assert abs(rmse(quantized, test["rating"]) - rmse(exact, test["rating"])) < 0.005
    assert 0 < np.abs(quantized - exact).max() < 0.1


def test_int8_stores_every_wide_table_int8_and_runs_the_fp32_graph(tmp_path: Path) -> None:
    net, rng = random_recent_ranker(), np.random.default_rng(1)
    with torch.no_grad():
        for table in (net.mf.user_bias, net.mf.item_bias):
            table.weight.normal_(std=0.3)
    rows = 300
    dense = rng.uniform(0, 50, (rows, len(EXPLICIT_FEATURES))).astype(np.float32)
    check = Inputs(rng.integers(0, 31, rows), rng.integers(0, 41, rows), dense, np.zeros(rows, np.float32),
                   np.zeros(rows, np.int64), rng.integers(0, 41, (rows, 4)))
    export_onnx(net, tmp_path / "fp32.onnx", check)

    quantize_int8_dynamic(tmp_path / "fp32.onnx", tmp_path / "int8.onnx")

    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    int8 = {i.name: tuple(i.dims) for i in graph.initializer if i.data_type == onnx.TensorProto.INT8}
    floats = [i.name for i in graph.initializer if len(i.dims) == 2 and i.dims[0] > 30 and i.dims[1] > 1 and i.data_type == onnx.TensorProto.FLOAT]
    assert {"user_vec_quantized", "item_vec_quantized", "implicit_quantized"} <= set(int8) and not floats  # the bias columns stay fp32
    assert session_ops(tmp_path / "int8.onnx", "int8") == session_ops(tmp_path / "fp32.onnx", "fp32")  # tables rebuilt at load, not folded
    exact, quantized = run_onnx(tmp_path / "fp32.onnx", check), run_onnx(tmp_path / "int8.onnx", check)
    assert 0 < np.abs(quantized - exact).max() < 0.02

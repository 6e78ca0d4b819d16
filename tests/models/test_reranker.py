"""The re-ranker: its inputs per candidate, the training lists, the listwise training,
the ONNX export and its registry attachment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from streamrec.models.candidates import Candidates
from streamrec.models.registry import ArtifactError, ModelRegistry
from streamrec.models.rerank_training import (ListSamples, RerankConfig, RerankNet, export_reranker, fit_reranker, hit_rate_at,
                                              listwise_loss, positive_ranks)
from streamrec.models.reranker import CONTEXT, LIST_INPUTS, RERANKER, input_names, list_inputs, open_reranker

COLUMN = {name: col for col, name in enumerate(input_names())}


def three_sources() -> Candidates:
    return Candidates(["c1", "c2", "e1", "p1"], [4.0, 1.0, 0.9, 0.5], (("covisit", 2), ("embedding", 1), ("popular", 1)))


def test_list_inputs_carry_the_model_order_the_merge_position_and_each_sources_score() -> None:
    context = np.array([[3, 99, 4.5], [3, 0, np.nan], [3, 7, 3.0], [3, 1, 2.0]], np.float64)

    x = list_inputs(np.array([0.1, 0.9, 0.5, 0.2]), three_sources(), context)

    assert x.shape == (4, len(LIST_INPUTS) + len(CONTEXT))
    assert np.allclose(np.expm1(x[:, COLUMN["log_model_rank"]]), [3, 0, 1, 2])
    assert np.allclose(np.expm1(x[:, COLUMN["log_position"]]), [0, 1, 2, 3])
    assert x[:, COLUMN["is_covisit"]].tolist() == [1, 1, 0, 0] and x[:, COLUMN["is_popular"]].tolist() == [0, 0, 0, 1]
    assert np.allclose(x[:, COLUMN["covisit_share"]], [1.0, 0.25, 0, 0])
    assert np.allclose(x[:, COLUMN["embedding_similarity"]], [0, 0, 0.9, 0]) and x[3, COLUMN["popular_score"]] == 0.5
    assert x[1, COLUMN["score_gap"]] == 0 and x[0, COLUMN["score_gap"]] < 0
    assert np.allclose(x[:, COLUMN["item_features:event_count"]], np.log1p([99, 0, 7, 1]))
    assert x[1, COLUMN["item_features:rating_mean"]] == 0  # missing
    assert list_inputs(np.zeros(0), Candidates([], [], ()), np.zeros((0, 3))).shape == (0, len(input_names()))


def test_a_training_list_needs_its_picked_item_and_a_scored_one_keeps_its_absence() -> None:
    training, scored = ListSamples(), ListSamples(keep_missing=True)
    rows = np.zeros((3, 2), np.float32)

    assert training.add(["a", "b", "c"], rows, "c") and not training.add(["a", "b", "c"], rows, "z")
    assert scored.add(["a", "b", "c"], rows, "z", np.array([1.0, 2, 3]))
    assert training.positive == [2] and scored.positive == [-1] and len(scored.counts) == 1
    with pytest.raises(ValueError, match="2 items but 3 input rows"):
        training.add(["a", "b"], rows, "a")


def test_the_positives_rank_breaks_ties_by_merge_position_and_absence_is_minus_one() -> None:
    lists = ListSamples(keep_missing=True)
    for items, picked in ((["a", "b", "c"], "b"), (["a", "b", "c"], "c"), (["a"], "z")):
        lists.add(items, np.zeros((len(items), 1), np.float32), picked)

    ranks = positive_ranks(lists, [np.array([1.0, 1.0, 0.0]), np.array([0.0, 2.0, 3.0]), np.array([1.0])])

    assert ranks.tolist() == [1, 0, -1]


def test_the_listwise_loss_ignores_padding() -> None:
    scores = torch.tensor([[2.0, 0.0, 50.0]])
    padded = listwise_loss(scores, torch.tensor([[True, True, False]]), torch.tensor([0]))

    assert padded.item() == pytest.approx(-np.log(np.exp(2) / (np.exp(2) + 1)), rel=1e-5)


def planted(lists: int, seed: int) -> ListSamples:
    """Lists of 30 where the picked candidate has the highest embedding similarity but a
    random merge position: the merge order gets about 1/3 into the top 10."""
    rng = np.random.default_rng(seed)
    samples = ListSamples()
    for _ in range(lists):
        x = rng.normal(size=(30, len(input_names()))).astype(np.float32)
        picked = int(rng.integers(30))
        x[:, COLUMN["embedding_similarity"]] = rng.uniform(0, 0.5, 30)
        x[picked, COLUMN["embedding_similarity"]] = 0.9
        samples.add([f"i{i}" for i in range(30)], x, f"i{picked}")
    return samples


def test_the_reranker_learns_what_orders_the_lists() -> None:
    train, test = planted(300, seed=1), planted(100, seed=2)

    net, fitted = fit_reranker(train, RerankConfig(hidden=8, epochs=20, k=1), progress=False)

    assert hit_rate_at(test, net.scores(test), 1) > 0.9
    assert fitted["held_merge_order_hr@1"] < 0.2 and fitted["epochs"] >= 1


def test_an_attached_reranker_is_verified_and_scores_as_the_net(tmp_path: Path) -> None:
    registry, version = ModelRegistry(tmp_path / "registry"), "v1"
    (tmp_path / "registry" / "versions" / version).mkdir(parents=True)
    (tmp_path / "registry" / "versions" / version / "metadata.json").write_text('{"variants": {}}')
    net = RerankNet(np.zeros(len(input_names())), np.ones(len(input_names())), hidden=4)
    rows = planted(5, seed=3).inputs
    export_reranker(net, tmp_path / "r.onnx", np.concatenate(rows))

    assert open_reranker(registry, version) is None
    registry.attach(version, RERANKER, tmp_path / "r.onnx", {"inputs": list(input_names()), "context": list(CONTEXT)})
    loaded = open_reranker(registry, version)

    assert loaded is not None and loaded.feature_names == CONTEXT
    assert np.allclose(loaded.score(rows[0]), net.scores(ListSamples(inputs=[rows[0]]))[0], atol=1e-5)
    (tmp_path / "registry" / "versions" / version / "reranker.onnx").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="sha256"):
        open_reranker(registry, version)


def test_ease_candidates_get_their_own_inputs_and_need_a_reranker_that_has_them() -> None:
    cands = Candidates(["s1", "s2", "c1"], [0.4, 0.1, 2.0], (("ease", 2), ("covisit", 1)))
    column = {name: col for col, name in enumerate(input_names(CONTEXT, ease=True))}

    x = list_inputs(np.array([0.3, 0.2, 0.1]), cands, np.zeros((3, 3)), CONTEXT, ease=True)

    assert x.shape == (3, len(input_names(CONTEXT, ease=True)))
    assert x[:, column["is_ease"]].tolist() == [1, 1, 0] and x[:, column["is_covisit"]].tolist() == [0, 0, 1]
    assert np.allclose(x[:, column["ease_share"]], [1.0, 0.25, 0]) and x[2, column["covisit_share"]] == 1.0
    with pytest.raises(ValueError, match="ease"):
        list_inputs(np.array([0.3, 0.2, 0.1]), cands, np.zeros((3, 3)))

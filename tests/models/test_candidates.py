"""Candidate generation: merging, exclusion, cold start, top-K and neighbour search."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from streamrec.models.candidates import (
    EMPTY,
    SOURCES,
    Candidate,
    CandidateConfig,
    ScoredItems,
    CandidateSource,
    covisit_scores,
    fuse,
    generate,
    merge,
    popular_scores,
    top_k,
)
from streamrec.models.item_vectors import ExactIndex, HnswIndex, ItemVectors, build_index, embedding_neighbours

ITEMS = st.sampled_from([f"i{n}" for n in range(30)])
SOURCE_LISTS = st.lists(st.lists(ITEMS, max_size=15, unique=True), min_size=3, max_size=3)
SCORES = st.floats(-100, 100, allow_nan=False)
PAIRS = st.lists(st.tuples(ITEMS, SCORES), max_size=20)  # repeats allowed


def as_sources(lists: list[list[str]], quotas: list[int]) -> list[tuple[CandidateSource, ScoredItems, int]]:
    return [(name, ScoredItems.of([(i, 1.0) for i in items]), q) for name, items, q in zip(SOURCES, lists, quotas)]


def plain_merge(sources: list[tuple[CandidateSource, list[tuple[str, float]], int]], exclude: set[str], limit: int) -> list[Candidate]:
    """The straightforward merge, one step per proposal (the reference for ``merge``)."""
    taken: dict[str, Candidate] = {}
    room = limit
    for source, scored, quota in sources:
        quota, added = min(quota, room), 0
        for item, score in scored:
            if added >= quota:
                break
            if item not in taken and item not in exclude:
                taken[item] = Candidate(item, source, score)
                added += 1
        room -= added
    return list(taken.values())


def plain_covisit(recent: list[tuple[str, float]], neighbours: dict[str, tuple[list[str], list[float]]]) -> list[tuple[str, float]]:
    own = {item for item, _ in recent}
    scores: dict[str, float] = {}
    for item, affinity in recent:
        for other, weight in zip(*neighbours.get(item, ((), ()))):
            if other not in own:
                scores[other] = scores.get(other, 0.0) + affinity * weight
    return sorted(scores.items(), key=lambda pair: -pair[1])


@given(st.lists(PAIRS, min_size=3, max_size=3), st.lists(st.integers(0, 12), min_size=3, max_size=3), st.sets(ITEMS), st.integers(0, 40))
def test_merge_equals_the_straightforward_merge(pairs, quotas, exclude, limit) -> None:
    sources = list(zip(SOURCES, pairs, quotas))

    merged = merge([(name, ScoredItems.of(scored), quota) for name, scored, quota in sources], exclude, limit)

    assert list(merged) == plain_merge(sources, exclude, limit)
    assert len(merged) == sum(count for _, count in merged.blocks)
    assert [merged.source(i) for i in range(len(merged))] == merged.sources()


NEIGHBOURS = st.dictionaries(ITEMS, st.lists(st.tuples(ITEMS, SCORES), max_size=8).map(lambda row: ([i for i, _ in row], [w for _, w in row])))


@given(st.lists(st.tuples(ITEMS, SCORES), max_size=10), NEIGHBOURS)
def test_covisit_scores_equal_the_straightforward_sum_and_stable_sort(recent, neighbours) -> None:
    assert covisit_scores(recent, neighbours) == plain_covisit(recent, neighbours)


@given(PAIRS)
def test_scored_items_keep_the_first_score_of_a_repeated_item(pairs) -> None:
    first: dict[str, float] = {}
    for item, score in pairs:
        first.setdefault(item, score)

    assert ScoredItems.of(pairs).pairs() == list(first.items())
    assert popular_scores([i for i, _ in pairs]).pairs() == [(i, 1.0 / (1 + [p for p, _ in pairs].index(i))) for i in first]


@given(SOURCE_LISTS, st.lists(st.integers(0, 10), min_size=3, max_size=3), st.sets(ITEMS), st.integers(1, 40))
def test_merge_takes_each_item_once_never_excluded_within_quota_and_limit(lists, quotas, exclude, limit) -> None:
    merged = merge(as_sources(lists, quotas), exclude, limit)

    ids = [c.item_id for c in merged]
    assert len(ids) == len(set(ids)) <= limit
    assert not set(ids) & exclude
    for name, quota in zip(SOURCES, quotas):
        assert sum(c.source == name for c in merged) <= quota


@given(SOURCE_LISTS, st.sets(ITEMS))
def test_an_item_keeps_the_most_personal_source_that_offers_it(lists, exclude) -> None:
    merged = merge(as_sources(lists, [100, 100, 100]), exclude, 1000)

    for candidate in merged:
        first = next(name for name, items in zip(SOURCES, lists) if candidate.item_id in items)
        assert candidate.source == first
    assert {c.item_id for c in merged} == set().union(*lists) - exclude


@given(SOURCE_LISTS, st.sets(ITEMS), st.integers(1, 40))
def test_popular_items_fill_the_list_up_to_the_limit(lists, exclude, limit) -> None:
    sources = as_sources(lists[:2], [2, 2]) + [("popular", popular_scores([f"i{n}" for n in range(30)]), limit)]

    merged = merge(sources, exclude, limit)

    assert len(merged) == min(limit, 30 - len(exclude))


def test_covisit_scores_sum_affinity_times_weight_and_skip_the_recent_items() -> None:
    recent = [("a", 2.0), ("b", 1.0)]
    neighbours = {"a": (["x", "b", "y"], [3.0, 9.0, 1.0]), "b": (["y", "a"], [4.0, 9.0])}

    found = covisit_scores(recent, neighbours)

    assert found == [("x", 6.0), ("y", 6.0)]  # y: 2*1 + 1*4; the tie keeps x (reached first) first


def test_generate_excludes_seen_items_and_labels_sources() -> None:
    cfg = CandidateConfig(covisit=5, embedding=5, max_candidates=10, popular_depth=10)
    neighbours = {"a": (["bought", "x"], [5.0, 1.0])}

    embedding = ScoredItems.of([("e1", 0.9), ("x", 0.8)])

    found = generate(cfg, [("a", 1.0)], neighbours, popular_scores(["p1", "x", "bought"]), {"bought"}, embedding)

    assert [(c.item_id, c.source) for c in found] == [("x", "covisit"), ("e1", "embedding"), ("p1", "popular")]


def test_a_new_user_gets_popular_items_up_to_max_candidates() -> None:
    cfg = CandidateConfig(max_candidates=4, popular_depth=10)
    popular = popular_scores([f"p{n}" for n in range(10)])

    found = generate(cfg, [], {}, popular, {"p0"})

    assert [c.item_id for c in found] == ["p1", "p2", "p3", "p4"]
    assert {c.source for c in found} == {"popular"}


def test_only_the_configured_number_of_recent_items_is_expanded() -> None:
    cfg = CandidateConfig(recent_items=1, max_candidates=10, popular_depth=10)
    neighbours = {"new": (["n1"], [1.0]), "old": (["o1"], [1.0])}

    found = generate(cfg, [("new", 1.0), ("old", 1.0)], neighbours, EMPTY, set())

    assert [c.item_id for c in found] == ["n1"]


def test_bad_sizes_fail_with_the_setting_name() -> None:
    with pytest.raises(ValidationError, match="popular_depth"):
        CandidateConfig(max_candidates=300, popular_depth=100)
    with pytest.raises(ValidationError, match="max_candidates"):
        CandidateConfig(max_candidates=0)
    with pytest.raises(ValidationError, match="covisit"):
        CandidateConfig(covisit=-1)


@given(st.lists(st.floats(-1e6, 1e6) | st.just(float("nan")), max_size=60), st.integers(0, 70))
def test_top_k_equals_a_stable_sort(values, k) -> None:
    scores = np.array(values, np.float64)

    picked = top_k(scores, k)

    keyed = [(-(v if not np.isnan(v) else -np.inf), i) for i, v in enumerate(values)]
    assert picked.tolist() == [i for _, i in sorted(keyed)][:k]


def vectors(n: int, dim: int = 8, seed: int = 0) -> ItemVectors:
    rng = np.random.default_rng(seed)
    return ItemVectors.normalised([f"i{r}" for r in range(n)], rng.normal(size=(n, dim)))


def test_exact_search_equals_brute_force_cosine() -> None:
    v = vectors(300)
    query = v.query([("i3", 2.0), ("i7", 1.0)])
    assert query is not None

    found = ExactIndex(v.matrix).search(query, 10)

    sims = v.matrix @ query
    assert [r for r, _ in found] == list(np.argsort(-sims)[:10])
    assert found[0][1] == pytest.approx(float(sims.max()), abs=1e-6)


def test_hnsw_finds_nearly_the_exact_neighbours() -> None:
    v = vectors(2000)
    queries = v.matrix[:20]

    exact, approx = ExactIndex(v.matrix), HnswIndex(v.matrix, 16, 64)

    recall = np.mean([len({r for r, _ in exact.search(q, 10)} & {r for r, _ in approx.search(q, 10)}) / 10 for q in queries])
    assert recall >= 0.9


def test_index_kind_follows_the_catalogue_size_threshold() -> None:
    v = vectors(50)

    assert build_index(v, CandidateConfig(exact_search_max_items=50)).kind == "exact"
    assert build_index(v, CandidateConfig(exact_search_max_items=49)).kind == "hnsw"


def test_embedding_neighbours_start_from_the_recent_items_and_ignore_unknown_ones() -> None:
    v = vectors(100)

    index = ExactIndex(v.matrix)

    known, unknown = embedding_neighbours(v, index, [[("i5", 1.0), ("unknown", 3.0)], [("unknown", 1.0)]], 3)

    assert known.pairs()[0] == ("i5", pytest.approx(1.0, abs=1e-6))
    assert list(known.items) == [v.ids[r] for r, _ in index.search(v.matrix[5], len(known.items))]
    assert not unknown.items


def test_batched_search_equals_one_query_at_a_time() -> None:
    v = vectors(500)

    for index in (ExactIndex(v.matrix), HnswIndex(v.matrix)):
        together, apart = index.search_many(v.matrix[:4], 5), [index.search(q, 5) for q in v.matrix[:4]]
        assert [[r for r, _ in found] for found in together] == [[r for r, _ in found] for found in apart]
        assert np.allclose([[s for _, s in found] for found in together], [[s for _, s in found] for found in apart], atol=1e-5)


def per_row_search(matrix: np.ndarray, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """The reference: the partitioned top of each row, then one stable sort per row."""
    sims = queries @ matrix.T
    top = np.argpartition(sims, len(matrix) - k, axis=1)[:, len(matrix) - k :]
    out = []
    for row, picks in zip(sims, top):
        picks = picks[np.argsort(-row[picks], kind="stable")]
        out.append(list(zip(picks.tolist(), row[picks].tolist())))
    return out


def test_exact_search_of_a_batch_equals_a_stable_sort_of_each_row_ties_included() -> None:
    matrix = np.repeat(vectors(40, dim=4).matrix, 3, axis=0)  # every vector three times: ties everywhere
    queries = matrix[[0, 5, 17]]

    assert ExactIndex(matrix).search_many(queries, 7) == per_row_search(matrix, queries, 7)


@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=60))
def test_fuse_at_the_ends_keeps_the_model_order_or_the_merge_order(scores: list[float]) -> None:
    values = np.asarray(scores, np.float32)
    assert top_k(fuse(values, 1.0, 60.0), len(values)).tolist() == top_k(values, len(values)).tolist()
    assert top_k(fuse(values, 0.0, 60.0), len(values)).tolist() == list(range(len(values)))


def test_fuse_lets_a_candidate_both_orders_like_overtake_one_only_the_model_likes() -> None:
    # the model likes 2 best, then 0; the merge order puts 0 first, 2 last
    scores = np.asarray([0.8, 0.1, 0.9], np.float32)
    fused = fuse(scores, 0.5, 1.0)
    assert top_k(fused, 3).tolist() == [0, 2, 1]
    assert top_k(fuse(scores, 0.9, 1.0), 3).tolist() == [2, 0, 1]


def test_ease_neighbours_come_first_and_the_setting_turns_them_off() -> None:
    ease = {"r": (["e1", "c1", "seen"], [0.5, 0.4, 0.3])}
    covisit = {"r": (["c1", "c2"], [3.0, 1.0])}
    popular = popular_scores(["p1"])
    on = CandidateConfig(ease=2, covisit=5, embedding=0, max_candidates=10, popular_depth=10)

    got = generate(on, [("r", 1.0)], covisit, popular, {"seen"}, ease=ease)
    off = generate(on.model_copy(update={"ease": 0}), [("r", 1.0)], covisit, popular, {"seen"}, ease=ease)

    assert [(c.item_id, c.source) for c in got] == [("e1", "ease"), ("c1", "ease"), ("c2", "covisit"), ("p1", "popular")]
    assert off == generate(on, [("r", 1.0)], covisit, popular, {"seen"}) and "ease" not in off.sources()

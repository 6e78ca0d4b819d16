from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamrec.models.config import ModelConfig
from streamrec.models.ort_package import onnxruntime_package
from streamrec.models.recommenders import NeuralRecommender
from streamrec.models.registry import ArtifactError, ModelRegistry
from streamrec.models.scorer import CPU, ScoreBatch, choose_provider, choose_variant, open_scorer
from streamrec.models.watcher import ModelWatcher, NoModelError
from streamrec.tools.models_cli import main
from tests.models.conftest import republish


@pytest.fixture()
def published(registry: ModelRegistry, artifact: tuple[Path, str], model_config: ModelConfig) -> ModelConfig:
    registry.promote(artifact[1])
    return model_config


def tamper(registry: ModelRegistry, version: str, variant: str = "fp32") -> None:
    path = registry.root / "versions" / version / registry.metadata(version)["variants"][variant]["file"]
    path.write_bytes(path.read_bytes() + b"\0")


def test_metadata_records_what_the_online_scorer_needs(published: ModelConfig, ranker: NeuralRecommender) -> None:
    registry = ModelRegistry(published.registry_dir)
    meta = registry.metadata(registry.current_version())

    assert meta["features"] == list(ranker.features) and meta["inputs"]["dense"]["shape"] == ["batch", 4]
    assert meta["users"] == ranker.encoder.users.ids() and meta["unknown_index"] == 0
    assert {"version", "created", "data", "metrics", "sha256"} <= set(meta)
    assert meta["variants"]["fp32"]["parity_max_abs_diff"] <= 1e-5 and meta["variants"]["int8"]["gate"]["passed"]


def test_promote_refuses_an_artifact_whose_sha256_does_not_match(registry: ModelRegistry, artifact: tuple[Path, str], tmp_path: Path) -> None:
    good = artifact[1]
    registry.promote(good)
    bad = republish(registry, good, tmp_path)
    tamper(registry, bad, "int8")

    with pytest.raises(ArtifactError, match="sha256"):
        registry.promote(bad)
    assert registry.current_version() == good


def test_watcher_swaps_to_a_promoted_version_without_restart(registry: ModelRegistry, artifact: tuple[Path, str], model_config: ModelConfig, tmp_path: Path) -> None:
    first = artifact[1]
    registry.promote(first)
    watcher = ModelWatcher(model_config)
    assert watcher.poll() and watcher.current()[1] == first
    second = republish(registry, first, tmp_path)

    assert not watcher.poll()  # nothing promoted: nothing changes, one stat call
    registry.promote(second)
    assert watcher.poll() and watcher.current()[1] == second


def test_watcher_keeps_the_old_model_when_the_new_one_is_bad(registry: ModelRegistry, artifact: tuple[Path, str], model_config: ModelConfig, tmp_path: Path) -> None:
    first = artifact[1]
    registry.promote(first)
    watcher = ModelWatcher(model_config.model_copy(update={"variant": "fp32"}))
    watcher.poll()
    second = republish(registry, first, tmp_path)
    registry.promote(second)  # promoted while good...
    tamper(registry, second)  # ...then corrupted on disk

    assert not watcher.poll()
    assert watcher.current()[1] == first and "sha256" in watcher.last_error
    assert not watcher.load(second) and watcher.current()[1] == first


def test_watcher_before_any_promotion_says_so(model_config: ModelConfig) -> None:
    watcher = ModelWatcher(model_config)

    assert not watcher.poll()
    with pytest.raises(NoModelError, match="promote"):
        watcher.current()


def test_scorer_scores_known_and_cold_start_rows(published: ModelConfig, ranker: NeuralRecommender, split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    registry = ModelRegistry(published.registry_dir)
    scorer = open_scorer(registry, registry.current_version(), "cpu", "fp32")
    test = split[1].iloc[:50]
    inputs = ranker.encoder.encode(test)

    scores = scorer.score(ScoreBatch(list(test.user_id), list(test.item_id), inputs.dense))
    cold = scorer.score(ScoreBatch("nobody", ["nothing"], np.full((1, 4), np.nan, np.float32)))

    np.testing.assert_allclose(scores, ranker.predict(test), atol=1e-5)
    assert np.isfinite(cold).all() and scorer.providers == [CPU]


def test_score_batch_for_user_places_features_by_name() -> None:
    names = ("user_features:rating_mean", "item_features:n_rating")

    batch = ScoreBatch.for_user("u", ["a", "b"], {"user_features:rating_mean": 4.0}, [{"item_features:n_rating": 3}, {}], names)

    np.testing.assert_array_equal(batch.dense, np.array([[4.0, 3.0], [4.0, np.nan]], np.float32))
    assert batch.user_ids == "u" and len(batch) == 2


def test_a_mean_with_zero_count_scores_like_a_missing_one(published: ModelConfig) -> None:
    registry = ModelRegistry(published.registry_dir)
    scorer = open_scorer(registry, registry.current_version(), "cpu", "fp32")
    as_stored = np.array([[0.0, 0.0, 0.0, 0.0]], np.float32)  # the online store's row for a new entity
    missing = np.array([[np.nan, 0.0, np.nan, 0.0]], np.float32)

    assert scorer.score(ScoreBatch("u", ["i"], as_stored)) == scorer.score(ScoreBatch("u", ["i"], missing))


def test_cpu_prefers_an_accepted_int8_and_cuda_fp16() -> None:
    meta = {"variants": {"fp32": {"accepted": True}, "int8": {"accepted": False}, "fp16": {"accepted": True}}}

    assert choose_variant(meta, CPU) == "fp32"
    assert choose_variant(meta, "CUDAExecutionProvider") == "fp16"
    assert choose_provider("auto") == CPU  # this machine has no CUDA provider
    with pytest.raises(RuntimeError, match="cuda"):
        choose_provider("cuda")


def test_onnxruntime_package_without_a_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi here

    assert onnxruntime_package() == "onnxruntime" and onnxruntime_package(pin=True) == "onnxruntime==1.31.1"


def test_cli_lists_and_promotes(registry: ModelRegistry, artifact: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    version, root = artifact[1], str(registry.root)

    assert main(["models", "promote", version, "--registry-dir", root]) == 0
    assert main(["models", "promote", "no-such-version", "--registry-dir", root]) == 1
    assert main(["models", "list", "--registry-dir", root]) == 0
    assert f"* {version}" in capsys.readouterr().out


def test_bad_settings_name_the_field() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="intra_op_threads"):
        ModelConfig(intra_op_threads=0)
    with pytest.raises(ValidationError, match="hidden"):
        ModelConfig(train={"hidden": ()})

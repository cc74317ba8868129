"""The decompensation model: the shipped one reproduces its card; bad models are refused;
installs are verified and can be rolled back; the training pipeline makes models the
gateway accepts."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge_twin.assess import model_store
from edge_twin.assess.drift import drift_report
from edge_twin.assess.features import FEATURES, twin_models
from edge_twin.assess.model_card import MODEL_NAME, ModelCard
from edge_twin.assess.risk_model import load_model, sha256, shipped_dir
from edge_twin.errors import ModelError
from firmware_sim.physiology.profile import CohortMix
from models.cohort import CohortSpec
from models.dataset import cohort_rows
from models.evaluate import auroc
from models.train import MISSING_LEVELS, small_plan, train


@pytest.fixture
def shipped_copy(tmp_path: Path) -> Path:
    target = tmp_path / "candidate"
    shutil.copytree(shipped_dir(), target)
    return target


def rewrite_card(directory: Path, **changes: object) -> None:
    path = ModelCard.json_path(directory)
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_the_shipped_model_gives_its_cards_figures_on_the_check_cohort() -> None:
    model = load_model(shipped_dir())
    check = model.card.check
    c = check["cohort"]
    spec = CohortSpec(
        c["seed"], c["patients"], c["days"], CohortMix(**c["mix"]), tuple(c["missing"])
    )
    rows = list(cohort_rows(spec, random_hour=False, jobs=2))
    x = np.concatenate([r.X for r in rows])
    y = np.concatenate([r.label for r in rows])
    risk = model.predict(x)
    assert len(risk) == check["rows"]
    np.testing.assert_allclose(risk[:20], check["risks_head"], atol=1e-5)
    assert float(np.mean(risk)) == pytest.approx(check["mean_risk"], abs=1e-5)
    if not np.isnan(check["auroc"]):
        assert auroc(risk, y) == pytest.approx(check["auroc"], abs=1e-4)
    assert ((risk >= 0) & (risk <= 1)).all()


def test_a_corrupted_model_is_refused(shipped_copy: Path) -> None:
    onnx_path = shipped_copy / f"{MODEL_NAME}.onnx"
    data = bytearray(onnx_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        load_model(shipped_copy)


def test_a_model_for_other_features_is_refused(shipped_copy: Path) -> None:
    rewrite_card(shipped_copy, features=[*FEATURES[:-1], "something_else"])
    with pytest.raises(ModelError, match="expects features"):
        load_model(shipped_copy)


@pytest.mark.parametrize(
    "recorded",
    [
        {**twin_models(), "heart_rate": "hr-baseline v1"},  # trained on an older HR filter
        {},  # a card that does not say
    ],
)
def test_a_model_trained_on_other_twin_filters_is_refused(
    shipped_copy: Path, recorded: dict[str, str]
) -> None:
    rewrite_card(shipped_copy, twin_models=recorded)
    with pytest.raises(ModelError, match="trained on the twin's filters"):
        load_model(shipped_copy)


def test_a_model_with_the_wrong_input_shape_is_refused(shipped_copy: Path) -> None:
    # a valid ONNX file, honestly checksummed, that takes 3 features instead of 21
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["features"], ["risk"], keepdims=0, axes=[1])],
        "wrong",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("risk", TensorProto.FLOAT, [None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx_path = shipped_copy / f"{MODEL_NAME}.onnx"
    onnx.save(model, onnx_path)
    rewrite_card(shipped_copy, sha256=sha256(onnx_path))
    with pytest.raises(ModelError, match="input shape"):
        load_model(shipped_copy)


def test_a_missing_file_is_refused(shipped_copy: Path) -> None:
    (shipped_copy / f"{MODEL_NAME}.onnx").unlink()
    with pytest.raises(ModelError, match="missing"):
        load_model(shipped_copy)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The training pipeline end to end on a tiny plan."""
    out = tmp_path_factory.mktemp("trained")
    train(out, small_plan("0.0.1-test"), jobs=2, progress=lambda _: None)
    return out


def test_the_training_pipeline_makes_a_model_the_gateway_accepts(small_model: Path) -> None:
    model = load_model(small_model)
    card = model.card
    assert card.version == "0.0.1-test"
    assert card.features == list(FEATURES)
    assert card.sha256 == sha256(small_model / f"{MODEL_NAME}.onnx")
    assert 0 < card.threshold <= 1
    assert (small_model / f"{MODEL_NAME}.md").read_text().startswith("# Model card")
    # the card's training distribution describes the rows it was trained on
    assert all(len(s.deciles) == 9 for s in card.feature_stats)


def test_install_verifies_and_rollback_restores(tmp_path: Path, small_model: Path) -> None:
    store_dir = tmp_path / "models"
    assert model_store.active(store_dir).card.version == load_model(shipped_dir()).card.version
    first = model_store.install(store_dir, shipped_dir())
    second = model_store.install(store_dir, small_model)
    assert model_store.active(store_dir).card.version == second.card.version
    # a corrupt candidate is refused and changes nothing
    bad = tmp_path / "bad"
    shutil.copytree(small_model, bad)
    (bad / f"{MODEL_NAME}.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError):
        model_store.install(store_dir, bad)
    assert model_store.active(store_dir).card.sha256 == second.card.sha256
    assert model_store.rollback(store_dir).card.sha256 == first.card.sha256
    assert model_store.active(store_dir).card.sha256 == first.card.sha256
    # the active model damaged on disk: the gateway falls back to the previous one
    active_dir = store_dir / (store_dir / "ACTIVE").read_text().strip()
    (active_dir / f"{MODEL_NAME}.onnx").write_bytes(b"\x00")
    assert model_store.active(store_dir).card.sha256 == second.card.sha256


@pytest.fixture(scope="module")
def fresh_cohort_features() -> list[dict[str, float | None]]:
    """Features of patients the model never saw, simulated as its training cohort was
    (same mix, missingness and hours; another seed): the training distribution."""
    spec = CohortSpec(seed=4242, patients=12, days=180, missing=MISSING_LEVELS)
    rows = [r for p in cohort_rows(spec, random_hour=True, jobs=2) for r in p.X]
    return [
        {name: None if np.isnan(v) else float(v) for name, v in zip(FEATURES, row, strict=True)}
        for row in rows
    ]


def test_no_drift_on_the_training_distribution_drift_when_a_feature_moves(
    fresh_cohort_features: list[dict[str, float | None]],
) -> None:
    card = load_model(shipped_dir()).card
    report = {d.feature: d for d in drift_report(card, fresh_cohort_features)}
    assert len(fresh_cohort_features) > 1000
    # Discrete features included (weight_readings_7d: deciles 1,2,3,3,4,5,5,6,7, which a
    # flat 10% per decile bin called drift on any data).
    assert {d.status for d in report.values()} <= {"stable", "moderate"}, {
        f: round(d.psi, 2) for f, d in report.items() if d.status not in ("stable", "moderate")
    }
    assert report["weight_readings_7d"].status == "stable"
    shifted = [dict(r, hr_vs_norm=(r["hr_vs_norm"] or 0.0) + 15.0) for r in fresh_cohort_features]
    moved = {d.feature: d for d in drift_report(card, shifted)}
    assert moved["hr_vs_norm"].status == "drift"
    assert moved["weight_sd"].status == report["weight_sd"].status  # the others untouched
    fewer = [dict(r, weight_readings_7d=1.0) for r in fresh_cohort_features]
    assert {d.feature: d for d in drift_report(card, fewer)}["weight_readings_7d"].status == "drift"
    assert drift_report(card, fresh_cohort_features[:5])[0].status == "too few rows"


def test_a_card_without_bin_shares_reports_no_reference() -> None:
    card = load_model(shipped_dir()).card
    old = replace(
        card, feature_stats=[replace(s, bin_edges=[], bin_shares=[]) for s in card.feature_stats]
    )
    assert {d.status for d in drift_report(old, [{}] * 50)} == {"no reference"}

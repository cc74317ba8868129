"""Installed risk models: verified before use, one step of rollback.

    <model_dir>/<version>-<sha256[:12]>/   decompensation.onnx + decompensation.card.json
    <model_dir>/ACTIVE                     the directory name in use
    <model_dir>/PREVIOUS                   the one before it (rollback target)

``install`` verifies a candidate completely (risk_model.load_model) before copying it in
and switching ACTIVE, so a corrupt or mismatched file never replaces a working model.
``active`` falls back from ACTIVE to PREVIOUS to the shipped model, reporting why, so a
model damaged on disk (an SD card) does not stop the gateway assessing risk.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from edge_twin.assess.model_card import MODEL_NAME, ModelCard
from edge_twin.assess.risk_model import RiskModel, load_model, shipped_dir
from edge_twin.errors import ModelError

log = logging.getLogger(__name__)

ACTIVE = "ACTIVE"
PREVIOUS = "PREVIOUS"


def _read(model_dir: Path, name: str) -> str | None:
    path = model_dir / name
    return path.read_text().strip() or None if path.is_file() else None


def _write(model_dir: Path, name: str, value: str) -> None:
    tmp = model_dir / f".{name}.tmp"
    tmp.write_text(value + "\n")
    os.replace(tmp, model_dir / name)  # atomic: a power cut leaves the old or the new


def install(model_dir: Path, candidate: Path) -> RiskModel:
    """Verify the model in ``candidate`` and make it the active one."""
    model = load_model(candidate)  # raises ModelError: nothing changes
    model_dir.mkdir(parents=True, exist_ok=True)
    name = f"{model.card.version}-{model.card.sha256[:12]}"
    target = model_dir / name
    if not target.exists():
        staging = model_dir / f".{name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for f in (f"{MODEL_NAME}.onnx", ModelCard.json_path(candidate).name, f"{MODEL_NAME}.md"):
            if (candidate / f).is_file():
                shutil.copy2(candidate / f, staging / f)
        os.replace(staging, target)
    installed = load_model(target)  # the copy is checked again before it goes live
    current = _read(model_dir, ACTIVE)
    if current and current != name:
        _write(model_dir, PREVIOUS, current)
    _write(model_dir, ACTIVE, name)
    return installed


def rollback(model_dir: Path) -> RiskModel:
    """Make the previous model active again (and the current one the previous)."""
    previous, current = _read(model_dir, PREVIOUS), _read(model_dir, ACTIVE)
    if previous is None:
        raise ModelError(f"no previous model to roll back to in {model_dir}")
    model = load_model(model_dir / previous)
    _write(model_dir, ACTIVE, previous)
    if current:
        _write(model_dir, PREVIOUS, current)
    return model


def active(model_dir: Path) -> RiskModel:
    """The model to use: ACTIVE, else PREVIOUS, else the shipped one."""
    for pointer in (ACTIVE, PREVIOUS):
        name = _read(model_dir, pointer)
        if name is None:
            continue
        try:
            return load_model(model_dir / name)
        except ModelError as exc:
            log.error("%s model %s refused, falling back: %s", pointer.lower(), name, exc)
    return load_model(shipped_dir())

"""The clinicians' expression models: population fusion, per-child calibration and
personalisation, and reliability ("uncertain").

Pure numpy/scipy/sklearn on per-bin feature rows (``affectline.features.FEATURE_NAMES``
order); storage and orchestration live in ``storage.tags``, ``storage.person_models``
and ``clinic`` (personalise, calibrate, rescore).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from affectline.types import EXPRESSION_CLASSES
from recognition.personal.calibration import Baseline, fit_baseline, observed
from recognition.personal.personalize import CALM, FitReport, NotEnoughTags, PersonalModel, TrainingSet, personalize
from recognition.personal.population import PopulationModel
from recognition.personal.reliability import UNCERTAIN, QualityRamps, decide, quality

DEFAULT_WINDOW = 3  # bins of centred smoothing (3 s at the default 1 s bins)

__all__ = [
    "CALM", "DEFAULT_WINDOW", "UNCERTAIN", "Baseline", "FitReport", "NotEnoughTags", "PersonalModel", "PopulationModel",
    "QualityRamps",
    "Scored", "TrainingSet", "fit_baseline", "personalize", "score_series",
]  # fmt: skip


@dataclass
class Scored:
    """One track's output per bin: label (``UNCERTAIN`` below threshold, None where no face
    was seen), confidence (None where unseen) and the probabilities over ``names``."""

    labels: list[str | None]
    confidence: np.ndarray
    proba: np.ndarray
    names: tuple[str, ...]


def score_series(
    X: np.ndarray,
    threshold: float,
    model: PersonalModel | None = None,
    baseline: Baseline | None = None,
    window: int = DEFAULT_WINDOW,
    ramps: QualityRamps | None = None,
) -> Scored:
    """Score one track's bins (time order) with a personal model, else the (calibrated) population model."""
    X = np.asarray(X, np.float64)
    if model is not None:
        P, names = model.predict_proba(X), model.labels
    else:
        b = baseline if baseline is not None else Baseline.identity()
        P = PopulationModel(window=window).predict_proba(X, b.logp_center, b.blend_center)
        names = EXPRESSION_CLASSES
    d = decide(P, quality(X, ramps or QualityRamps()), threshold)
    seen = observed(X) & np.isfinite(P).all(axis=1)
    labels = [lab if s else None for lab, s in zip(d.labels(names), seen)]
    conf = np.where(seen, d.confidence, np.nan)
    return Scored(labels, conf, P, tuple(names))

"""A simulated child for tests and benchmarks: feature rows whose expressions mean
something else than they do for the population.

Each "look" is a face configuration (blendshape activations plus the FER2013 output it
produces). ``CHILD_LOOKS`` maps the clinician's labels to looks the way this child
shows them: their anxiety is a smile, their joy is an open-mouthed wide-eyed face (the
population reads surprise), their frustration is a pressed, lowered brow (the
population reads anger), and their resting face has raised inner brows (the population
reads sadness). Only the child's own tags can teach the difference. Resting stretches are
calm: the clinician marks the first as a calm baseline and leaves the others untagged
(``clinic.personalise.training_set`` reads untagged time of a tagged session as calm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from affectline.features import FEATURE_NAMES
from affectline.types import EXPRESSION_CLASSES
from recognition.personal.population import COL

# look -> (blendshape activations, FER2013 class probabilities before noise)
LOOKS: dict[str, tuple[dict[str, float], dict[str, float]]] = {
    "rest": ({"browInnerUp": 0.35, "eyeBlinkLeft": 0.1, "eyeBlinkRight": 0.1}, {"sad": 0.45, "neutral": 0.45, "fear": 0.1}),
    "smile": (
        {"mouthSmileLeft": 0.7, "mouthSmileRight": 0.7, "cheekSquintLeft": 0.4, "cheekSquintRight": 0.4, "browInnerUp": 0.3},
        {"happy": 0.85, "neutral": 0.1, "surprise": 0.05},
    ),
    "open_wide": (
        {"jawOpen": 0.6, "eyeWideLeft": 0.5, "eyeWideRight": 0.5, "browOuterUpLeft": 0.5, "browOuterUpRight": 0.5,
         "browInnerUp": 0.5},
        {"surprise": 0.7, "fear": 0.2, "happy": 0.1},
    ),
    "brow_press": (
        {"browDownLeft": 0.6, "browDownRight": 0.6, "mouthPressLeft": 0.5, "mouthPressRight": 0.5, "eyeSquintLeft": 0.3,
         "eyeSquintRight": 0.3},
        {"angry": 0.6, "sad": 0.25, "neutral": 0.15},
    ),
}  # fmt: skip
CHILD_LOOKS: dict[str, str] = {"anxiety": "smile", "happy": "open_wide", "frustration": "brow_press"}


@dataclass(frozen=True)
class SimTag:
    t_start: float
    t_end: float
    label: str
    is_baseline: bool = False


@dataclass
class SimSession:
    """One session of one track: per-bin feature rows (``FEATURE_NAMES`` order) and its tags."""

    X: np.ndarray
    tags: list[SimTag]
    bin_seconds: float = 1.0


def face_rows(look: str, n: int, rng: np.random.Generator, intensity: float = 1.0, noise: float = 0.12) -> np.ndarray:
    """``n`` noisy, well-lit, frontal feature rows of one look."""
    blend, probs = LOOKS[look]
    rest_blend = LOOKS["rest"][0]
    X = np.zeros((n, len(FEATURE_NAMES)))
    base = np.zeros(len(FEATURE_NAMES))
    for k, v in rest_blend.items():
        base[COL[k]] = v
    for k, v in blend.items():
        base[COL[k]] = max(base[COL[k]], v * intensity)
    bl = [COL[k] for k in FEATURE_NAMES[:52]]
    X[:, bl] = np.clip(base[bl] + rng.normal(0, noise, (n, 52)), 0, 1)
    alpha = np.array([probs.get(c, 0.0) + 0.02 for c in EXPRESSION_CLASSES]) * 8 * intensity
    X[:, [COL[f"p_{c}"] for c in EXPRESSION_CLASSES]] = rng.dirichlet(alpha, size=n)
    X[:, COL["yaw"]] = rng.normal(0, 8, n)
    X[:, COL["pitch"]] = rng.normal(0, 6, n)
    X[:, COL["roll"]] = rng.normal(0, 4, n)
    X[:, COL["face_visible"]] = 1.0
    X[:, COL["landmarks_found"]] = 1.0
    X[:, COL["face_px"]] = rng.uniform(70, 120, n)
    X[:, COL["sharpness"]] = rng.uniform(80, 300, n)
    return X


def simulate_child(
    n_sessions: int = 4,
    tags_per_session: int = 12,
    seed: int = 0,
    looks: dict[str, str] | None = None,
    tag_bins: tuple[int, int] = (3, 8),
    gap_bins: tuple[int, int] = (2, 6),
    baseline_bins: int = 12,
    unseen_fraction: float = 0.03,
    baseline_label: str = "calm",
) -> list[SimSession]:
    """Sessions of a child: a tagged baseline at the start, then tagged expressions between rest.

    Labels cycle through ``looks`` in a shuffled order so every label gets several
    separate tag runs. A few bins are unseen (NaN features, ``face_visible`` 0).
    """
    looks = looks or CHILD_LOOKS
    rng = np.random.default_rng(seed)
    labels = list(looks)
    out = []
    for _ in range(n_sessions):
        parts, tags, t = (
            [face_rows("rest", baseline_bins, rng)],
            [SimTag(0.0, float(baseline_bins), baseline_label, True)],
            baseline_bins,
        )
        order = [labels[i % len(labels)] for i in range(tags_per_session)]
        rng.shuffle(order)
        for lab in order:
            g = int(rng.integers(*gap_bins, endpoint=True))
            parts.append(face_rows("rest", g, rng))
            t += g
            d = int(rng.integers(*tag_bins, endpoint=True))
            parts.append(face_rows(looks[lab], d, rng, intensity=float(rng.uniform(0.4, 1.1))))
            tags.append(SimTag(float(t), float(t + d), lab))
            t += d
        parts.append(face_rows("rest", 3, rng))
        X = np.vstack(parts)
        unseen = rng.random(len(X)) < unseen_fraction
        X[unseen] = np.nan
        X[unseen, COL["face_visible"]] = 0.0
        out.append(SimSession(X, tags))
    return out

"""What each expression model's numbers are worth: its measured figures, beside the numbers it gives.

Imports nothing of ours: the dashboard, the reports and the CLI look a recording's
``expression_model`` (``name@sha256-prefix``) up here and print one line such as
"Expression model: macro-F1 0.52 on the development set (model card)" beside its
numbers, or "not measured" when no card matches. The figures come from
``affectline eval expressions ../shared/fixtures/expressions`` (README, model cards);
``anchor`` is the README heading anchor of the model's card.
"""

from __future__ import annotations

from dataclasses import dataclass

README_URL = "README.md"


@dataclass(frozen=True)
class ModelCard:
    model_id_prefix: str  # matched against the start of a stored ``expression_model`` id
    name: str
    macro_f1: float  # 5-class (angry, happy, sad, surprise, neutral) on the development set, native size
    accuracy: float
    ece: float  # expected calibration error
    anchor: str  # README heading anchor of this model's card, e.g. "model-card-fer2013-mini-xception"

    @property
    def link(self) -> str:
        return f"{README_URL}#{self.anchor}"


CARDS: tuple[ModelCard, ...] = (
    # The default head: out-of-fold figures of ``affectline eval expressions ../shared/fixtures/expressions
    # --sizes native --cv 5`` (identity-grouped folds, head and temperature refitted per fold; README
    # "Model card: fer-flip-calibrated").
    ModelCard("fer-flip-calibrated@c1d43043b8dc", "FER2013 mini-Xception (crop and mirror) + blendshapes, calibrated",
              macro_f1=0.699, accuracy=0.789, ece=0.038, anchor="model-card-fer-flip-calibrated"),
    # The previous default (light) head: identity-grouped 5-fold CV, native-size faces (bench/expression_head_fit.py
    # ... mx,blend,pose; README "Model card: fer-blend-calibrated"; through ``eval expressions --cv 5``,
    # refitted on native faces only: F1(5) 0.639, accuracy 0.769, ECE 0.028).
    ModelCard("fer-blend-calibrated@d162ff48724e", "FER2013 mini-Xception + blendshapes, calibrated", macro_f1=0.662,
              accuracy=0.777, ece=0.024, anchor="model-card-fer-blend-calibrated"),
    # Identity-grouped 5-fold cross-validated figures on the development set, native-size faces
    # (bench/expression_head_fit.py; README "Model card: fer-ensemble-calibrated").
    ModelCard("fer-ensemble-calibrated@51b5a40c74f2", "FER2013 ensemble, calibrated", macro_f1=0.686, accuracy=0.787,
              ece=0.015, anchor="model-card-fer-ensemble-calibrated"),
    # The same development set through the same faces and boxes, uncalibrated (grouped CV not needed: nothing fitted).
    ModelCard("fer2013-mini-xception@", "FER2013 mini-Xception (fer)", macro_f1=0.489, accuracy=0.552, ece=0.120,
              anchor="model-card-fer2013-mini-xception"),
)
"""Filled from measured figures (``affectline eval expressions``); none is guessed."""


def card_for(model_id: str | None, cards: tuple[ModelCard, ...] | None = None) -> ModelCard | None:
    """The card whose prefix starts ``model_id`` (the longest such prefix), or None."""
    if not model_id:
        return None
    hits = [c for c in (CARDS if cards is None else cards) if model_id.startswith(c.model_id_prefix)]
    return max(hits, key=lambda c: len(c.model_id_prefix)) if hits else None


def accuracy_line(model_id: str | None, cards: tuple[ModelCard, ...] | None = None) -> str:
    """One line for beside the numbers: how accurate the expression model is, or that nobody measured it."""
    c = card_for(model_id, cards)
    if c is None:
        return f"Expression model {model_id or 'unknown'}: accuracy not measured."
    return (f"Expression model {c.name}: macro-F1 {c.macro_f1:.2f}, accuracy {c.accuracy:.2f} "
            f"on the development set (model card: {c.link}).")  # fmt: skip


def accuracy_markdown(model_id: str | None, cards: tuple[ModelCard, ...] | None = None) -> str:
    """``accuracy_line`` for a page that renders Markdown: the model card as a link."""
    c = card_for(model_id, cards)
    if c is None:
        return accuracy_line(model_id, cards)
    return (f"Expression model {c.name}: macro-F1 {c.macro_f1:.2f}, accuracy {c.accuracy:.2f} on the development set "
            f"([model card]({c.link})).")  # fmt: skip

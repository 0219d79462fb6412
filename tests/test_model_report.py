"""services.model_report: the stored report of a personal model version, as a clinician reads it."""

from __future__ import annotations

import pandas as pd

from services import model_report as mr

NEW = {
    "labels": ["angry", "calm", "happy"], "n_bins": 400, "comparison_labels": ["angry", "happy"], "comparison_bins": 150,
    "population_omitted": "",
    "personal": {"macro_f1": 0.9, "balanced_accuracy": 0.88, "coverage": 0.7},
    "personal_compared": {"macro_f1": 0.85, "balanced_accuracy": 0.8, "coverage": 0.7},
    "population": {"macro_f1": 0.6, "balanced_accuracy": 0.6, "coverage": 0.9},
    "population_calibrated": {"macro_f1": 0.7, "balanced_accuracy": 0.7, "coverage": 0.9},
    "shares": {"3": {"bins": 100, "tagged": {"calm": 0.9, "angry": 0.1}, "before": {"neutral": 0.7, "angry": 0.3},
                     "after": {"calm": 0.88, "angry": 0.12}},
               "7": {"bins": 50, "tagged": None, "before": {"neutral": 1.0}, "after": {"calm": 1.0}}},
}  # fmt: skip


def test_scores_name_the_labels_each_row_is_scored_on():
    f = mr.scores_frame(NEW)
    assert f["model"].tolist() == ["personal, all labels", "population", "population, calibrated to the child", "personal"]
    assert f.loc[0, "labels"] == "angry, calm, happy" and f.loc[0, "bins"] == 400
    assert (f.loc[1:, "labels"] == "angry, happy").all() and (f.loc[1:, "bins"] == 150).all()
    assert mr.comparison_note(NEW) == "compared on the labels both models can output (angry, happy), 150 tagged bins"


def test_not_compared_and_legacy_versions_say_so():
    omitted = NEW | {"comparison_labels": [], "population_omitted": "it outputs none of calm",
                     "population": None, "population_calibrated": None, "personal_compared": None}  # fmt: skip
    assert mr.scores_frame(omitted)["model"].tolist() == ["personal, all labels"]
    assert mr.comparison_note(omitted) == "population model not compared: it outputs none of calm"
    legacy = {"labels": ["anxiety", "happy"], "n_bins": 80, "personal": {"macro_f1": 1.0}, "population": {"macro_f1": 0.0}}
    assert mr.is_legacy(legacy) and "may count labels the population model cannot say" in mr.comparison_note(legacy)
    assert mr.scores_frame(legacy)["model"].tolist() == ["personal, all labels", "population (as stored)"]


def test_shares_of_a_tagged_and_an_untagged_session():
    f = mr.shares_frame(NEW, 3).set_index("label")
    assert f.loc["calm", ["tagged", "before", "after"]].tolist() == [0.9, 0.0, 0.88]
    assert f.loc["neutral", "before"] == 0.7 and f.loc["neutral", "after"] == 0.0
    g = mr.shares_frame(NEW, 7)
    assert g["tagged"].isna().all() and g.set_index("label").loc["calm", "after"] == 1.0
    assert mr.shares_frame(NEW, 99).empty and len(mr.shares_frame(NEW)) == 5
    assert mr.shares_line(NEW, 3) == ("session 3 (100 bins): tagged calm 90%, angry 10% | before neutral 70%, angry 30% | "
                                      "after calm 88%, angry 12%")  # fmt: skip
    assert mr.shares_line(NEW, 7).startswith("session 7 (50 bins): not tagged | before neutral 100%")
    assert isinstance(f, pd.DataFrame)

"""Class descriptor sentences for CLIP-CAER models we train ourselves.

Written for Affectline (the official sentences are not reused). Each describes what a
camera sees in a classroom for one class of ``ACADEMIC_CLASSES``: the face first, then
head and body, since the model reads a face stream and a context stream. They are
plain data; a trained checkpoint records the ones it was trained with, and the prompt
buffers in the file carry their token embeddings.
"""

from __future__ import annotations

from affectline.types import ACADEMIC_CLASSES

DESCRIPTORS: dict[str, str] = {
    "Neutrality": (
        "a calm face with relaxed lips and steady eyes, head level and turned toward the lesson, "
        "sitting upright and still."
    ),
    "Enjoyment": (
        "a smiling face with raised cheeks and crinkled eyes, maybe laughing, head up and body "
        "leaning in with lively gestures."
    ),
    "Confusion": (
        "a frowning face with knitted brows and squinting eyes, lips pressed or pursed, head tilted, "
        "hand at the chin or scratching the head."
    ),
    "Fatigue": (
        "a tired face with heavy drooping eyelids or a yawn, head sinking or propped on a hand, "
        "shoulders slumped over the desk."
    ),
    "Distraction": (
        "eyes and head turned away from the lesson, looking around, talking to a neighbour "
        "or down at a phone, body twisted in the seat."
    ),
}


def class_descriptors(class_names: tuple[str, ...] = ACADEMIC_CLASSES) -> list[str]:
    """Descriptors in ``class_names`` order (raises KeyError naming a class without one)."""
    missing = [c for c in class_names if c not in DESCRIPTORS]
    if missing:
        raise KeyError(f"no descriptor for classes {missing}; known: {sorted(DESCRIPTORS)}")
    return [DESCRIPTORS[c] for c in class_names]

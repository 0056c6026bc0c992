"""The text prompt ensemble of method §1, as data, plus the pure function that expands it.

A prompt is ``template.format(state.format(object_name))``: for the object "bottle", the state
"damaged {}" and the template "a cropped photo of the {}." give "a cropped photo of the damaged bottle.".
"""
from __future__ import annotations

from ..errors import InvalidInputError


NORMAL_STATES: tuple[str, ...] = (
    "{}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
)

ABNORMAL_STATES: tuple[str, ...] = (
    "damaged {}",
    "broken {}",
    "{} with flaw",
    "{} with defect",
    "{} with damage",
)

TEMPLATES: tuple[str, ...] = (
    "a cropped photo of the {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "a close-up photo of the {}.",
    "a bright photo of a {}.",
    "a bright photo of the {}.",
    "a dark photo of the {}.",
    "a dark photo of a {}.",
    "a jpeg corrupted photo of a {}.",
    "a jpeg corrupted photo of the {}.",
    "a blurry photo of the {}.",
    "a blurry photo of a {}.",
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
    "a photo of the {} for visual inspection.",
    "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.",
    "a photo of a {} for anomaly detection.",
    "a black and white photo of the {}.",
    "a black and white photo of a {}.",
    "a low resolution photo of the {}.",
    "a low resolution photo of a {}.",
    "a bad photo of the {}.",
    "a bad photo of a {}.",
    "a good photo of the {}.",
    "a good photo of a {}.",
    "a photo of one {}.",
    "a photo of my {}.",
    "there is a {} in the scene.",
    "there is the {} in the scene.",
    "this is one {} in the scene.",
)


def expand_prompts(object_name: str, states: tuple[str, ...], templates: tuple[str, ...]) -> list[str]:
    """All ``len(states) × len(templates)`` sentences for one object and one state group.

    >>> expand_prompts("bottle", ("damaged {}",), ("a photo of the {}.",))
    ['a photo of the damaged bottle.']
    """
    name = clean_object_name(object_name)
    return [t.format(s.format(name)) for s in states for t in templates]


def clean_object_name(object_name: str) -> str:
    """Normalise an object name ("  Metal_nut " → "metal nut"); raise ValueError when it is empty."""
    if not isinstance(object_name, str):
        raise InvalidInputError(f"object_name must be a string such as 'bottle', got {type(object_name).__name__}")
    try:
        object_name.encode("utf-8")
    except UnicodeEncodeError as err:  # a lone surrogate (e.g. from a mis-decoded file name)
        raise InvalidInputError(f"object_name {object_name!r} holds a character that is not valid text "
                                f"({err.reason} at position {err.start}); type the name again.") from err
    name = " ".join(object_name.replace("_", " ").split()).lower()
    if not name:
        raise InvalidInputError("object_name is empty: give the kind of object shown, e.g. 'bottle' or "
                                "'metal surface'.")
    return name

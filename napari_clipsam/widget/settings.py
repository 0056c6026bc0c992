"""The widget's remembered settings: a small JSON file in the user config folder (no Qt).

The folder is ``platformdirs.user_config_dir("napari-clipsam")``; the environment variable
``NAPARI_CLIPSAM_CONFIG_DIR`` overrides it (tests, portable installs). A missing, unreadable or hand-broken
file never stops the widget: bad entries fall back to their defaults.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..config import DEFAULT_PRESET, PRESETS, ClipSAMConfig
from ..config_checks import BACKENDS
from ..export import FORMATS
from ..io.atomic import atomic_file

log = logging.getLogger(__name__)
DEFAULTS = ClipSAMConfig()  # the one default config (napari_clipsam.config): the thresholds start from it
FILE_NAME = "widget.json"
DEVICES = ("auto", "cpu", "cuda")


def settings_path() -> Path:
    """Where the settings live: ``$NAPARI_CLIPSAM_CONFIG_DIR/widget.json`` or the user config folder."""
    folder = os.environ.get("NAPARI_CLIPSAM_CONFIG_DIR")
    if not folder:
        import platformdirs

        folder = platformdirs.user_config_dir("napari-clipsam", appauthor=False)
    return Path(folder) / FILE_NAME


@dataclass
class WidgetSettings:
    """Everything the widget remembers between sessions (preset and thresholds: the default config's). Not
    *overwrite*: every session starts with it off, so a tick from another day never lets an Export or an Accept
    replace saved labels."""

    object_name: str = "object"
    preset: str = DEFAULT_PRESET
    umci_weights: str = ""
    clip_weights: str = ""
    sam_weights: str = ""
    device: str = "auto"
    backend: str = "auto"
    prompt_threshold: float = DEFAULTS.prompt_threshold
    mask_threshold: float = DEFAULTS.mask_threshold
    alpha: float = DEFAULTS.alpha
    all_frames: bool = False
    classes: list[str] = field(default_factory=lambda: ["defect"])
    export_dir: str = ""
    formats: list[str] = field(default_factory=lambda: list(FORMATS))
    qa_input: str = ""
    qa_output: str = ""
    aligned_parts: bool = False  # folder mutual scoring with the aligned window (parts in a fixture)
    qa_file_order: bool = False  # the folder review walks file order instead of worst first

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> WidgetSettings:
        """Read the settings; defaults for a missing file or for any entry of the wrong type or value."""
        path = Path(path) if path is not None else settings_path()
        defaults = cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, ValueError) as err:
            log.warning("Ignoring unreadable widget settings %s: %s", path, err)
            data = {}
        if not isinstance(data, dict):
            data = {}
        values = {}
        for f in dataclasses.fields(cls):
            default = getattr(defaults, f.name)
            value = data.get(f.name, default)
            values[f.name] = value if _valid(f.name, value, default) else default
        return cls(**values)

    def save(self, path: str | os.PathLike | None = None) -> None:
        """Write the settings (atomically: a crash never leaves half a file). Failures are only logged."""
        path = Path(path) if path is not None else settings_path()
        try:
            with atomic_file(path) as f:
                f.write(json.dumps(dataclasses.asdict(self), indent=2).encode("utf-8"))
        except OSError as err:
            log.warning("Could not save widget settings to %s: %s", path, err)


def weights_overrides(clip_weights: str, sam_weights: str) -> dict:
    """ClipSAMConfig fields for the widget's local weight choices ('' = the preset's official download).

    A folder is a ``local-dir:`` model (CLIP: ``open_clip_config.json`` + weights; SAM: ``sam_config.json`` +
    ``sam.pth``); a file is a checkpoint for the preset's architecture (e.g. ``ViT-L-14-336px.pt``,
    ``sam_vit_b_01ec64.pth``).
    """
    out: dict = {}
    for kind, text in (("clip", clip_weights), ("sam", sam_weights)):
        if not text.strip():
            continue
        path = Path(text.strip()).expanduser()
        if path.is_dir():
            out.update({f"{kind}_model": f"local-dir:{path}", f"{kind}_weights": None})
        else:
            out[f"{kind}_weights"] = str(path)
    return out


def _valid(name: str, value, default) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0
    if isinstance(default, list):
        if not (isinstance(value, list) and all(isinstance(v, str) and v for v in value)):
            return False
        if name == "formats":
            return all(v in FORMATS for v in value)
        return bool(value)  # at least one class
    if name == "preset":
        return value in PRESETS
    if name == "backend":
        return value in BACKENDS
    if name == "device":
        return isinstance(value, str) and (value in DEVICES or value.startswith("cuda:"))
    return isinstance(value, str)

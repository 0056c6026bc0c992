"""Where model files come from: Meta's official SAM checkpoints, OpenAI's CLIP ViT-L/14@336 (URL, SHA-256, size)
and the cache folder they are downloaded into (and where an offline user places them)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "NAPARI_CLIPSAM_CACHE"


@dataclass(frozen=True)
class WeightsFile:
    """A downloadable model file: its name in the cache, the URL, SHA-256 and size in bytes."""

    name: str
    filename: str
    url: str
    sha256: str
    size: int


SAM_CHECKPOINTS: dict[str, WeightsFile] = {
    "vit_b": WeightsFile("SAM vit_b", "sam_vit_b_01ec64.pth",
                         "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
                         "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", 375_042_383),
    "vit_l": WeightsFile("SAM vit_l", "sam_vit_l_0b3195.pth",
                         "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
                         "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", 1_249_524_607),
    "vit_h": WeightsFile("SAM vit_h", "sam_vit_h_4b8939.pth",
                         "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
                         "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", 2_564_550_879),
}


_VITL14_336 = WeightsFile(
    "CLIP ViT-L/14@336 (OpenAI)", "ViT-L-14-336px.pt",
    "https://openaipublic.azureedge.net/clip/models/"
    "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
    "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02", 0)  # OpenAI names the file by its SHA-256
CLIP_CHECKPOINTS: dict[tuple[str, str], WeightsFile] = {
    ("ViT-L-14-336-quickgelu", "openai"): _VITL14_336,
    ("ViT-L-14-336", "openai"): _VITL14_336,
}
"""(open_clip model name, pretrained tag) → the file ClipSAM downloads itself into ``<cache>/clip`` (other tags are
left to open_clip's own download)."""


def cache_dir() -> Path:
    """The folder for downloaded weights and embedding caches.

    ``$NAPARI_CLIPSAM_CACHE`` when set, else the platform's user cache folder (e.g. ``~/.cache/napari-clipsam``).
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("napari-clipsam", appauthor=False))

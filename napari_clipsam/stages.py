"""The stages of one ClipSAM run, in the order the engine reports them (progress bars rely on this order)."""
from __future__ import annotations

STAGES = ("text", "clip", "rough map", "prompts", "sam encoder", "sam decoder", "merge")

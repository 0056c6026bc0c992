"""MMR: Multi-level Mask Refinement — prompts from the rough map, SAM decoding, merge into the final map."""
from .merge import FinalMaps, fuse_maps, keep_candidates, merge_component
from .prompts import Prompts, group_user_prompts, prompts_from_map

__all__ = ["Prompts", "prompts_from_map", "group_user_prompts", "keep_candidates", "merge_component",
           "fuse_maps", "FinalMaps"]

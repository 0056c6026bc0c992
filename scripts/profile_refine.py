"""Time a refine after one edited component, by part: the bench's ``one_component_edit_s`` (issue 23).

Builds SAM's real architecture with random weights (``--sam vit_b``, no download), a random image embedding of a
512-px image and the bench's rough map of 10 blobs (:func:`napari_clipsam.bench.stages.blob_map`), decodes all
prompts once (the memo of decoded prompts filled, as in the dock), then moves one point of component 0 ``rounds``
times and times each refine (``refine_from_prompts`` with the memo, what ``ClipSAM.refine`` runs). The decoders
(torch, and OpenVINO unless ``--no-openvino``) are timed in alternation on the same process, so the machine's
load falls on both alike. Per part (cProfile, cumulative seconds per refine): the prompt encoder, the mask
decoder, the upsampling of new logits to image size, the memo's unpacking, filtering and merging of each
component, and the final fusion; the rest is Python around them.

    python scripts/profile_refine.py [--sam vit_b] [--rounds 6] [--threads N] [--no-openvino] [--static]
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time

import numpy as np
import torch

PARTS = {"prompt encoder": ("prompt_encoder.py", "forward"), "mask decoder (torch)": ("mask_decoder.py", "forward"),
         "mask decoder (OpenVINO)": ("openvino_decoder.py", "__call__"),
         "upsampling to image size": ("sam_decoder.py", "masks_at_image"),
         "memo: unpacking masks": ("multiarray.py", "unpackbits"), "filter": ("merge.py", "keep_candidates"),
         "merge one component": ("merge.py", "merge_component"), "final fusion": ("merge.py", "fuse_maps"),
         "final fusion (from boxes)": ("merge.py", "fuse_placed")}


def parts_of(stats: pstats.Stats, n: int) -> dict[str, float]:
    out = {}
    for name, (file, func) in PARTS.items():
        out[name] = sum(v[3] for (f, _, fn), v in stats.stats.items()
                        if (f.endswith(file) and fn == func) or (f == "~" and func in fn and file == "multiarray.py")) / n
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sam", default="vit_b")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-openvino", action="store_true")
    p.add_argument("--static", action="store_true", help="OpenVINO decoder: compile a copy per prompt shape used")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from segment_anything import sam_model_registry

    from napari_clipsam.bench.stages import blob_map
    from napari_clipsam.config import ClipSAMConfig
    from napari_clipsam.engine.cache import EngineCache
    from napari_clipsam.mmr.levels import refine_from_prompts
    from napari_clipsam.mmr.prompts import prompts_from_map
    from napari_clipsam.mmr.sam_decoder import SamEmbedding, SamRunner

    torch.manual_seed(0)
    sam = sam_model_registry[args.sam]().eval().requires_grad_(False)
    runners = {"torch": SamRunner(sam, "random")}
    if not args.no_openvino:
        from napari_clipsam.engine.backends.ir_cache import IRCache
        from napari_clipsam.engine.backends.openvino_decoder import OpenVinoSamDecoder

        ov = runners["openvino"] = SamRunner(sam, "random")
        ov.decoder = OpenVinoSamDecoder(sam, {"model": args.sam, "weights": "random"}, IRCache(tempfile.mkdtemp()))
        t = time.perf_counter()
        ov.decoder.prepare()
        print(f"OpenVINO mask decoder converted and compiled in {time.perf_counter() - t:.1f} s")
    emb = SamEmbedding(0.5 * torch.randn(1, 256, 64, 64), (1024, 1024), (512, 512), "random")
    config = ClipSAMConfig.preset("cpu")
    rough = blob_map((512, 512), 10)
    prompts = prompts_from_map(rough, config)
    memos = {name: EngineCache(2 ** 31) for name in runners}
    for name, runner in runners.items():
        refine_from_prompts(runner, emb, prompts, rough, config, memo=memos[name], memo_tag=(name,))
    if args.static and "openvino" in runners:  # a copy compiled for each (prompts, tokens) shape the refine used
        t = time.perf_counter()
        for shape in sorted(runners["openvino"].decoder.seen):
            runners["openvino"].decoder.compile_static(shape)
        print(f"static decoder copies {sorted(runners['openvino'].decoder.seen)} compiled in "
              f"{time.perf_counter() - t:.1f} s")
    walls = {name: [] for name in runners}
    cpus = {name: [] for name in runners}  # process CPU time (all threads): less moved by other jobs' load
    profiles = {name: cProfile.Profile() for name in runners}
    finals = {}
    points = prompts.points.copy()
    with torch.no_grad():
        for r in range(args.rounds):
            points[0] += 3.0
            for name, runner in runners.items():
                edited = prompts.__class__(**{**prompts.__dict__, "points": points.copy()})
                t, c = time.perf_counter(), time.process_time()
                maps, _ = refine_from_prompts(runner, emb, edited, rough, config, memo=memos[name], memo_tag=(name,))
                walls[name].append(time.perf_counter() - t)
                cpus[name].append(time.process_time() - c)
                finals.setdefault(r, {})[name] = maps
                # profiled apart (cProfile slows Python down), on prompts of its own so that it decodes too
                moved_points = points.copy()
                moved_points[0] += 0.5
                moved = prompts.__class__(**{**prompts.__dict__, "points": moved_points})
                profiles[name].runcall(refine_from_prompts, runner, emb, moved, rough, config, memo=memos[name],
                                       memo_tag=(name,))
    print(f"{prompts.num_components} components, one moved point; {torch.get_num_threads()} torch threads; "
          f"{args.rounds} rounds")
    for name in runners:
        w = np.array(walls[name]) * 1e3
        print(f"{name}: median {np.median(w):.0f} ms, min {w.min():.0f} ms (per refine, no profiler); CPU time "
              f"median {1e3 * np.median(cpus[name]):.0f} ms")
        parts = parts_of(pstats.Stats(profiles[name]), args.rounds)
        total = sum(v[3] for (f, _, fn), v in pstats.Stats(profiles[name]).stats.items()
                    if fn == "refine_from_prompts") / args.rounds
        for part, s in parts.items():
            if s:
                print(f"    {part:28s} {s * 1e3:6.1f} ms")
        print(f"    {'whole refine (profiled)':28s} {total * 1e3:6.1f} ms")
    if len(runners) == 2:
        diff = max(float(np.abs(f["torch"].final_map - f["openvino"].final_map).max()) for f in finals.values())
        same = all(np.array_equal(f["torch"].mask, f["openvino"].mask) for f in finals.values())
        print(f"final maps torch vs OpenVINO: max |Δ| {diff:.1e}; masks identical: {same}")


if __name__ == "__main__":
    main()

"""The plugin as a napari user meets it, in one fresh process (run by tests/test_plugin_flows.py).

Order: napari.Viewer(show=True) → Plugins ▸ ClipSAM (through the npe2 manifest) → choose local weights in the
widget's own settings → Run on a sample → edit a prompt → refine → export. Nothing heavy is imported by this
script: the dock imports torch & co. in a background thread when it opens (after the OpenGL context exists), so
the first Run finds them loaded.

Usage: python plugin_real_order.py CLIP_DIR SAM_DIR OUT_DIR
Prints "[flow] ..." lines and "[flow] ok" at the end; any failure exits non-zero.
"""
import sys
import warnings
from pathlib import Path

import napari
from _flow import say, wait

HEAVY = ("torch", "torchvision", "triton", "open_clip", "segment_anything")

# every warning is recorded: at the end none may be a deprecation or FutureWarning raised in napari or this
# package (e.g. private attribute access through the viewer proxy napari gives plugins)
recorder = warnings.catch_warnings(record=True)
seen = recorder.__enter__()
warnings.simplefilter("always")

clip_dir, sam_dir, out_dir = sys.argv[1:4]
viewer = napari.Viewer(show=True)
say("viewer created")
dock, widget = viewer.window.add_plugin_dock_widget("napari-clipsam", "ClipSAM")
say(f"opened from the manifest: {type(widget).__name__}")
assert widget.viewer is not viewer and widget.viewer == viewer, "the widget should keep napari's proxy as given"
from napari_clipsam.heavy_imports import preload_in_background  # noqa: E402  (light: the thread the dock started)

preloading = preload_in_background()
assert preloading.name == "napari-clipsam preload", preloading
preloading.join(120)  # the dock imports torch & co. in the background, after the OpenGL context exists
assert not preloading.is_alive() and "napari_clipsam.engine.clipsam" in sys.modules, "the preload did not finish"
say(f"preloaded in the background: {[m for m in HEAVY if sys.modules.get(m) is not None]}")
viewer.open_sample("napari-clipsam", "metal")
image = viewer.layers["metal plate"]
widget.select_source(image)
c = widget.c
c.clip_weights.setText(clip_dir)
c.clip_weights.editingFinished.emit()
c.sam_weights.setText(sam_dir)
c.sam_weights.editingFinished.emit()
c.object_name.setText("metal plate")
c.prompt_threshold.setValue(0.5)
c.run.click()
wait(lambda: not widget.busy, what="the first Run")
assert widget.engine is not None, widget.status
say(f"run done: {widget.status}")
from napari_clipsam.heavy_imports import prepare_heavy_imports  # noqa: E402  (light: reports the decision)

say(f"heavy imports: {prepare_heavy_imports()}")
outputs = widget.current_outputs()
masks_before = outputs.masks.data.copy()
# edit a prompt: a positive point on the stain, as a click in "add" mode would
outputs.prompts.add([[200.0, 95.0]])
loop = widget.correction_for(image)
wait(lambda: loop.last_latency is not None and not loop.busy, what="the refine after the edit")
say(f"refined {loop.last_latency * 1000:.0f} ms after the edit; {int(outputs.masks.data.max())} instance(s)")
assert (outputs.masks.data != masks_before).any(), "the edit did not change the masks"
c.export_dir.setText(out_dir)
c.export.click()
files = sorted(p.relative_to(out_dir).as_posix() for p in Path(out_dir).rglob("*") if p.is_file())
say(f"exported {files}")
assert any(f.endswith(".tif") for f in files) and any(f.endswith(".png") for f in files), files
viewer.close()
ours = [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in seen
        if issubclass(w.category, (DeprecationWarning, FutureWarning))
        and ("napari" in w.filename or "napari" in str(w.message))]
assert not ours, "napari deprecations / FutureWarnings:\n" + "\n".join(ours)
say(f"no napari deprecation or FutureWarning ({len(seen)} other warning(s))")
say("ok")

"""The dock imports torch & co. in a background thread when it opens (heavy_imports.preload_in_background).
Code that then imports the same stack by another door in another thread (writing tiny models with open_clip,
as scripts/render_widget.py does right after opening the dock) must wait for it: two threads importing
torchvision's modules at once see one half made ("cannot import name ... from partially initialized module")."""
import os
import subprocess
import sys

RACE = """
import sys, time
from napari_clipsam.heavy_imports import preload_in_background
thread = preload_in_background()
while "torchvision" not in sys.modules and thread.is_alive():  # the preload is inside torchvision's imports
    time.sleep(0.001)
from napari_clipsam.weights.tiny import write_tiny_clip
write_tiny_clip(sys.argv[1])
thread.join()
import napari_clipsam.engine.clipsam  # and the preload's own import completed
print("ok")
"""


def test_writing_tiny_models_while_the_dock_preloads_torch_does_not_break_either_import(tmp_path):
    done = subprocess.run([sys.executable, "-c", RACE, str(tmp_path / "clip")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
    assert "partially initialized" not in done.stderr and "preloading the libraries failed" not in done.stderr
    assert (tmp_path / "clip" / "open_clip_pytorch_model.bin").is_file()

"""An encoder's one-time OpenVINO conversion in a child process, so the caller's process keeps its GIL.

Tracing a torch module and ``openvino.convert_model`` hold Python's GIL for long stretches (the dock's window
froze 0.3–0.7 s at a time while SAM's image encoder converted on the first Run). :func:`convert_in_child` pickles
the module (``torch.save`` of the module itself: its classes come from importable packages such as open_clip and
segment_anything) into a private scratch folder, runs ``python -m napari_clipsam.engine.backends.convert_child``
on it, which converts exactly as the in-process path does (same example input, telemetry off, the same warnings
silenced) and writes the IR into the scratch folder, then reads that IR back. The caller (``IRCache``) saves it
into the cache atomically, as before.

The child runs at a lower priority (:data:`CHILD_NICENESS`): it takes every idle core, but the caller's threads
(the dock's window) are served first. While the child runs, ``poll()`` is called every :data:`POLL_S`; whatever it raises (a cancel) kills the child,
removes the scratch folder and is raised again, so no half-written IR is left and the next Run converts again.
When the child cannot be used (the module does not pickle, the interpreter cannot be started, the child fails)
:func:`convert_in_child` logs why and returns None, and the caller converts in its own process.
``NAPARI_CLIPSAM_CONVERT_IN_PROCESS=1`` skips the child.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
POLL_S = 0.05
"""How often (seconds) the caller looks at the child and calls ``poll``."""
CHILD_NICENESS = 10
"""How much lower the child's scheduling priority is than the caller's (POSIX ``nice``; 0 to 19)."""
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])


@dataclass
class WrittenIR:
    """A model the child converted, with the scratch ``folder`` holding the IR files it wrote (``model.xml``,
    ``model.bin``): the cache stores those files as they are instead of serialising the model again
    (``openvino.save_model`` holds Python's GIL throughout: 1.5 s for CLIP ViT-L/14@336, a frozen window).
    Whoever takes one removes its folder (:meth:`discard`; :func:`model_of` does both)."""

    model: Any
    folder: Path

    def files(self) -> dict[str, bytes]:
        return {name: (self.folder / name).read_bytes() for name in ("model.xml", "model.bin")}

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def model_of(made):
    """The ``openvino.Model`` of a conversion's result: ``made`` itself, or a :class:`WrittenIR`'s model (its
    folder removed)."""
    if isinstance(made, WrittenIR):
        made.discard()
        return made.model
    return made


def input_spec(input_size: int | None = None, inputs: list | None = None) -> dict:
    """What a module is traced on: ``{"example": [shape, ...], "dynamic": [shape, ...] or None}``, one zero
    tensor per example shape (an encoder's ``(1, 3, S, S)`` image from ``input_size``, or ``inputs``: pairs
    ``(example shape, shape with -1 for dimensions left dynamic)``, e.g. the mask decoder's prompt count)."""
    if inputs is None:
        return {"example": [[1, 3, int(input_size), int(input_size)]], "dynamic": None}
    return {"example": [list(map(int, e)) for e, _ in inputs], "dynamic": [list(map(int, d)) for _, d in inputs]}


def convert_module(ov, module, spec: dict):
    """``openvino.convert_model`` of ``module`` traced on :func:`input_spec`'s zero inputs (the one way both the
    child and the caller's own process convert)."""
    import torch

    example = tuple(torch.zeros(*shape) for shape in spec["example"])
    kwargs = {} if spec["dynamic"] is None else {"input": [ov.PartialShape(d) for d in spec["dynamic"]]}
    with torch.no_grad():
        return ov.convert_model(module.eval(), example_input=example[0] if len(example) == 1 else example,
                                **kwargs)


def convert_in_child(module, input_size: int | None, poll: Callable[[], None] | None = None,
                     inputs: list | None = None, keep_files: bool = False):
    """The ``openvino.Model`` of ``module`` traced on a ``(1, 3, S, S)`` zero input (or on ``inputs``, see
    :func:`input_spec`), converted in a child process; None (logged) when the child cannot be used. ``poll()``
    raising stops the child (see module text). ``keep_files``: a :class:`WrittenIR` instead, the child's files
    kept for the caller."""
    if os.environ.get("NAPARI_CLIPSAM_CONVERT_IN_PROCESS") == "1":
        return None
    import torch

    from .openvino_runtime import import_openvino

    scratch = Path(tempfile.mkdtemp(prefix=f".ir-{os.getpid()}-child-"))
    handed_over = False
    try:
        try:
            torch.save(module, scratch / "module.pt")
        except Exception as exc:  # a local class, a lambda, an open file inside the module
            log.warning("napari-clipsam: converting in this process (the window may pause): the module cannot be "
                        "handed to a child process (%s: %s)", type(exc).__name__, exc)
            return None
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([_PACKAGE_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                               if p])
        args = [sys.executable, "-m", __name__, str(scratch / "module.pt"),
                json.dumps(input_spec(input_size, inputs)),
                str(scratch / "model.xml")]
        try:
            with open(scratch / "stderr.txt", "wb") as err:  # the child holds its own copy of the descriptor
                child = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err)
        except OSError as exc:
            log.warning("napari-clipsam: converting in this process (the window may pause): cannot start %s (%s)",
                        sys.executable, exc)
            return None
        try:
            while child.poll() is None:
                if poll is not None:
                    poll()
                time.sleep(POLL_S)
        except BaseException:
            child.kill()
            child.wait()
            raise
        if child.returncode != 0:
            tail = (scratch / "stderr.txt").read_text(errors="replace")[-1500:]
            log.warning("napari-clipsam: converting in this process (the window may pause): the conversion child "
                        "exited with %s:\n%s", child.returncode, tail)
            return None
        core = import_openvino().Core()
        core.set_property({"ENABLE_MMAP": False})  # weights read into memory: the scratch file goes below
        model = core.read_model(str(scratch / "model.xml"))
        if not keep_files:
            return model
        handed_over = True
        return WrittenIR(model, scratch)
    finally:
        if not handed_over:
            shutil.rmtree(scratch, ignore_errors=True)


def _main(argv: list[str]) -> int:
    import torch

    from .conversion_progress import quiet_conversion
    from .openvino_runtime import converter_telemetry_off, import_openvino

    module_path, spec, xml = argv[0], argv[1], argv[2]
    if hasattr(os, "nice"):  # below the caller's priority: on 2 cores the window's thread gets the CPU it asks for
        os.nice(CHILD_NICENESS)
    spec = json.loads(spec) if spec.startswith("{") else input_spec(int(spec))
    ov = import_openvino()
    if not converter_telemetry_off():
        print("OpenVINO's converter has its telemetry on in the child", file=sys.stderr)
        return 3
    module = torch.load(module_path, weights_only=False)
    with quiet_conversion():
        model = convert_module(ov, module, spec)
    ov.save_model(model, xml, compress_to_fp16=False)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

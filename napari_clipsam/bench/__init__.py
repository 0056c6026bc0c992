"""Benchmarks: per-stage timings (:mod:`.stages`), encoder backends side by side (:mod:`.backends`), clocks and
memory probes (:mod:`.timing`). Run by ``napari-clipsam bench``."""

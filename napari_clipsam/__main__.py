"""``python -m napari_clipsam``: the same command line as ``napari-clipsam``."""
from napari_clipsam.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

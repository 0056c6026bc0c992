"""Run ``segment`` and ``eval`` on a Ray cluster (``--ray [ADDRESS]``), with the same outputs as one machine.

A pool of engine actors (:mod:`.pool`), each loading the models once, reads images from their paths and returns
compact per-image results (:mod:`.workers`); the driver is the only writer of the output folder and exports
them with the same code as the local command (:mod:`.segment`, :mod:`.evaluate`). Ray's own machinery restarts
a lost actor and retries its calls. No module here imports Ray when it is imported: Ray is imported when a
``--ray`` run starts (:func:`.cluster.connect`), so without ``--ray`` it never is.

Install with ``pip install "napari-clipsam[ray]"``.
"""

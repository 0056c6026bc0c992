"""Files in and out, one way each: :mod:`.images` (read an image file; normalise any image array for the engine)
and :mod:`.atomic` (all-or-nothing writes of one file or of several). Imports neither torch nor Qt."""

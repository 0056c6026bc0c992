"""CLIP side of ClipSAM: text prompts and their embeddings, frozen vision features, UMCI, the rough map."""

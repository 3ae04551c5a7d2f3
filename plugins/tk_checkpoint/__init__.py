"""Item-level, crash-safe JSON checkpoints for the tk_ingest loaders."""

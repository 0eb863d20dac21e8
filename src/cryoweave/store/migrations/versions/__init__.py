"""Migration scripts, one revision per file, ``NNNN_what.py`` with ``revision = "NNNN"``."""

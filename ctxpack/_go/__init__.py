"""Ports of Go behaviour Docker relies on: strings, ``path/filepath.Match``, RE2 → ``re``."""

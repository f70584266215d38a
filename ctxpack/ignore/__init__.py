"""Ignore files: reading ``.dockerignore``, compiling patterns, deciding paths. Never lists a directory."""

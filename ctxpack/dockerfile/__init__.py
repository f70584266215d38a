"""Dockerfiles: BuildKit's parser rules, and the analysis of what a build can read."""

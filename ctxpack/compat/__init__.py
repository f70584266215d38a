"""Drop-in replacements for other tools' build-context code (:mod:`ctxpack.compat.dockerpy`)."""

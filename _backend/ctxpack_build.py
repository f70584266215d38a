"""ctxpack's build backend: setuptools', with its work directories outside
the checkout.

``pip install .`` builds in the source tree, and setuptools leaves ``build/``
and ``ctxpack.egg-info/`` there, where ``ctxpack size .`` on the checkout
then counts them.  This backend hands every hook to
``setuptools.build_meta`` unchanged, with one extra distutils configuration
file (setuptools reads ``DIST_EXTRA_CONFIG``) that puts both into a temporary
directory, removed when the hook returns.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from setuptools import build_meta as _setuptools


@contextlib.contextmanager
def _work_outside_the_checkout() -> Iterator[None]:
    with tempfile.TemporaryDirectory(prefix="ctxpack-build-") as tmp:
        cfg = os.path.join(tmp, "outside.cfg")
        with open(cfg, "w", encoding="utf-8") as f:
            f.write(f"[build]\nbuild_base = {os.path.join(tmp, 'build')}\n[egg_info]\negg_base = {tmp}\n")
        before = os.environ.get("DIST_EXTRA_CONFIG")
        os.environ["DIST_EXTRA_CONFIG"] = cfg
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("DIST_EXTRA_CONFIG", None)
            else:
                os.environ["DIST_EXTRA_CONFIG"] = before


def _outside(name: str) -> Any:
    hook = getattr(_setuptools, name)

    def run(*args: Any, **kwargs: Any) -> Any:
        with _work_outside_the_checkout():
            return hook(*args, **kwargs)

    run.__name__ = name
    run.__doc__ = hook.__doc__
    return run


get_requires_for_build_wheel = _outside("get_requires_for_build_wheel")
get_requires_for_build_sdist = _outside("get_requires_for_build_sdist")
prepare_metadata_for_build_wheel = _outside("prepare_metadata_for_build_wheel")
build_wheel = _outside("build_wheel")
build_sdist = _outside("build_sdist")
if hasattr(_setuptools, "build_editable"):  # PEP 660 (pip install -e)
    get_requires_for_build_editable = _outside("get_requires_for_build_editable")
    prepare_metadata_for_build_editable = _outside("prepare_metadata_for_build_editable")
    build_editable = _outside("build_editable")

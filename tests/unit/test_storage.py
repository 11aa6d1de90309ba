from __future__ import annotations

from pathlib import Path

import pytest

from tuner.errors import TunerError
from tuner.storage import open_storage, redact, storage_url


def test_redact_hides_passwords_only() -> None:
    assert redact("postgresql://bob:s3cret@db/x") == "postgresql://bob:***@db/x"
    assert redact("postgresql://bob@db/x") == "postgresql://bob@db/x"
    assert redact("sqlite:///studies/tuner.db") == "sqlite:///studies/tuner.db"
    assert redact("redis://:pw@localhost:6379/0") == "redis://:***@localhost:6379/0"


def test_default_url(tmp_path: Path) -> None:
    assert storage_url(tmp_path) == f"sqlite:///{tmp_path}/tuner.db"


def test_bad_url_never_shows_the_password() -> None:
    with pytest.raises(TunerError) as caught:
        open_storage("nosuchdb://bob:hunter2@localhost/x")
    assert "hunter2" not in str(caught.value)
    assert "bob:***@localhost" in str(caught.value)

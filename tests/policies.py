"""Policy files for tests: the bundled ones and revised versions of them."""

from __future__ import annotations

from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "config"


def revised_policy(tmp_path: Path) -> Path:
    """hqip.toml as a new version that keeps marketing data 25 months, not 13."""
    text = (CONFIG / "hqip.toml").read_text()
    assert 'version = "2023-11"' in text and '"P13M"' in text
    revised = tmp_path / "hqip-2024-06.toml"
    revised.write_text(text.replace('version = "2023-11"', 'version = "2024-06"')
                       .replace('"P13M"', '"P25M"'))
    return revised

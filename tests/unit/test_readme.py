"""The README's lists that must name everything the code has."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from streams.orders.contract import REASONS
from streams.settings import PREFIX, Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_rejection_reason_is_in_the_readmes_list() -> None:
    paragraph = README[README.index("Rejection reasons"):README.index("A dead letter carries")]
    listed = set(re.findall(r"`([a-z_0-9]+)`", paragraph))
    assert set(REASONS) <= listed, f"missing from the README: {sorted(set(REASONS) - listed)}"


def test_every_setting_is_in_the_readmes_settings_table() -> None:
    table = README[README.index("## Settings"):README.index("## Commands")]
    missing = [PREFIX + f.name.upper() for f in fields(Settings) if PREFIX + f.name.upper() not in table]
    assert not missing, f"settings missing from the README: {missing}"

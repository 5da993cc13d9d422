"""The apply commands' options, as --help shows them: every one explained."""
from __future__ import annotations

import pytest

from genoformer.commands.attribute import attribute
from genoformer.commands.predict import predict
from genoformer.commands.score_variants import score_variants


@pytest.mark.parametrize("command", [predict, score_variants, attribute], ids=lambda c: c.name)
def test_every_option_has_help_text(command):
    unexplained = [p.name for p in command.params if p.name != "help" and not (p.help or "").strip()]
    assert unexplained == []

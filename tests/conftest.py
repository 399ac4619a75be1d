import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # lets tests import the independent reference

import pytest


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory):
    """A small UFine-Synth dataset shared by the training and evaluation tests."""
    from ufinebench.synth.build import SynthConfig, build

    out = tmp_path_factory.mktemp("tiny_synth") / "ds"
    build(out, SynthConfig(identities=20, images_per_id=(2, 3), size=(64, 32), seed=3, difficulty="easy"), workers=1)
    return out

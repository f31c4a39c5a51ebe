"""An arch's dict and key: the dataclass's own fields, the key computed once and the same string it always was
(the accuracy memo and the caches are keyed by it)."""

from __future__ import annotations

import json
import pickle
import random
from dataclasses import asdict, replace

from tinyflow.arch.genome import Arch
from tinyflow.arch.space import MBConvSpace

SPACE = MBConvSpace(width_mult=0.5, resolution=64, num_classes=10)


def reference_key(arch: Arch) -> str:
    """The key's definition: the arch's fields as `asdict` gives them, without name and genome, as sorted JSON."""
    d = asdict(arch)
    d.pop("name")
    d.pop("genome")
    return json.dumps(d, sort_keys=True)


def test_to_dict_and_key_match_their_definitions():
    for seed in range(50):
        arch = SPACE.sample(random.Random(seed))
        assert arch.to_dict() == asdict(arch)
        assert arch.key() == reference_key(arch) == arch.key()  # the second call: the cached string
        assert Arch.from_dict(arch.to_dict()) == arch


def test_the_cached_key_follows_the_arch():
    arch = SPACE.sample(random.Random(0))
    key = arch.key()
    other = replace(arch, resolution=arch.resolution // 2)
    assert other.key() != key and other.key() == reference_key(other)  # a changed copy gets its own key
    clone = pickle.loads(pickle.dumps(arch))  # what a forked worker sends back
    assert clone == arch and clone.key() == key and hash(clone) == hash(arch)
    assert "_key" not in arch.to_dict()
    d = arch.to_dict()
    d["genome"]["x"] = 1  # a copy: the arch's genome is not the dict handed out
    assert "x" not in arch.genome

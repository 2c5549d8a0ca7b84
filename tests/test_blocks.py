import re

import pytest

from fairchem_prune.architectures.gemnet_oc import kept_partitions
from fairchem_prune.blocks import resolve_kept_blocks
from fairchem_prune.errors import PruneError


def test_keep_first_blocks_and_explicit_subsets():
    assert resolve_kept_blocks(6) == [0, 1, 2, 3, 4, 5]
    assert resolve_kept_blocks(6, num_blocks_kept=4) == [0, 1, 2, 3]
    assert resolve_kept_blocks(6, kept_blocks=[0, 1, 2, 4]) == [0, 1, 2, 4]
    assert kept_partitions([0, 1, 2, 4]) == [0, 1, 2, 3, 5]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_blocks_kept=7), "cannot keep 7 blocks"),
        (dict(num_blocks_kept=0), "cannot keep 0 blocks"),
        (dict(kept_blocks=[0, 6]), "block(s) [6] do not exist"),
        (dict(kept_blocks=[-1, 2]), "block(s) [-1] do not exist"),
        (dict(kept_blocks=[0, 2, 2]), "duplicate"),
        (dict(kept_blocks=[2, 0, 1]), "not in increasing order"),
        (dict(kept_blocks=[]), "empty"),
        (dict(num_blocks_kept=3, kept_blocks=[0, 1]), "not both"),
    ],
)
def test_invalid_block_choices_are_explained(kwargs, message):
    with pytest.raises(PruneError, match=re.escape(message)):
        resolve_kept_blocks(6, **kwargs)

"""Step metrics computed from the gathered batch: worked examples."""

import torch

from aapo.training.step_metrics import level_ties


def test_ties_by_level_count_each_level_s_groups():
    # six groups: level 1 holds groups 0, 2, 5 (tied, untied, tied): 2/3; level 2 holds 1, 4
    # (neither tied): 0; group 3 has no level and is left out (it still counts overall)
    levels = [1, 2, 1, None, 2, 1]
    tied = torch.tensor([True, False, False, True, False, True])
    assert level_ties(levels, tied) == {"ties/level_1": 2 / 3, "ties/level_2": 0.0}


def test_ties_by_level_only_for_levels_drawn():
    assert level_ties([None, None], torch.tensor([True, False])) == {}
    assert level_ties(["Level 5"], torch.tensor([True])) == {"ties/level_Level 5": 1.0}

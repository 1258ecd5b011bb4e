"""CDPruner's pieces against ``reference_vision`` (the DPP, its relevance) and its choices where the official code
has none (beyond the kernel's rank, which text tokens are the instruction). The shared oracles
(``test_oracles.py``) run it on every family against ``reference_vision.cdpruner`` through the masked reference."""
import pytest
import torch

from SequentialPrune import PruneConfig
from SequentialPrune.scorers.cdpruner import greedy_dpp, instruction_positions, relevance
from SequentialPrune.testing import reference_vision as rv

pytestmark = pytest.mark.core


@pytest.mark.parametrize("theta", [None, 0.5])
def test_greedy_dpp_and_relevance_equal_the_reference(theta):
    g = torch.Generator().manual_seed(0)
    img, text = torch.randn(40, 16, generator=g), torch.randn(5, 16, generator=g)
    rel = relevance(img, text)
    assert torch.allclose(rel, rv.cdpruner_relevance(img, text), atol=1e-12)
    for keep in (1, 7, 16):
        assert sorted(greedy_dpp(img, rel, keep, theta).tolist()) == rv.cdpruner(img, rel.tolist(), keep, theta)


def test_beyond_the_kernels_rank_the_rest_go_by_relevance():
    f = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    rel = torch.tensor([0.2, 0.9, 0.5, 0.4], dtype=torch.float64)
    got = greedy_dpp(f, rel, 3).tolist()
    assert got[:2] == [1, 2] and got[2] == 3  # rank 2; then the most relevant of 0 (0.2) and 3 (0.4)


def test_the_instruction_is_the_text_after_the_last_image():
    visual = torch.tensor([False, True, True, False, True, False, False])
    valid = torch.tensor([False, True, True, True, True, True, True])
    assert instruction_positions(visual, valid).tolist() == [5, 6]
    assert instruction_positions(torch.tensor([False, True, True]), torch.ones(3, dtype=torch.bool)).tolist() == [0]


def test_defaults():
    assert PruneConfig("cdpruner").plan(576) == {0: 128}
    with pytest.raises(ValueError, match="theta"):
        PruneConfig("cdpruner", options={"theta": 1.0})

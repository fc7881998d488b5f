"""Born-dead ReLU networks: a reduced grid of the experiment, against 1 - (1 - 2^-N)^(L-1)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from fcn_research import born_dead


def test_born_dead_matches_the_single_input_probability(capsys):
    assert born_dead.main(["widths=[2,4]", "depths=[2,5,10]", "inits=2000", "grid=7"]) == 0
    out = capsys.readouterr().out
    assert "constant on the domain <= dead at one input: holds in every cell" in out
    assert "| 2 | 0.000 / " in out  # one hidden layer is never constant on a 2-D domain


def test_born_dead_cells():
    cfg = OmegaConf.create(
        {
            "widths": [2, 4],
            "depths": [2, 5, 10],
            "inits": 2000,
            "in_features": 2,
            "grid": 7,
            "seed": 1,
        }
    )
    cells = {(c.width, c.depth): c for c in born_dead.born_dead(cfg)}
    for cell in cells.values():
        assert abs(cell.single - cell.predicted) <= 4 * cell.sd
        assert cell.domain <= cell.single
    # Narrow and deep: most networks are born dead on the whole domain; wider ones far fewer.
    assert cells[2, 10].domain > 0.7
    assert cells[4, 10].domain < cells[2, 10].domain - 0.3
    assert cells[2, 2].domain == 0.0
    assert born_dead.single_input_probability(2, 3) == pytest.approx(1 - 0.75**2)


def test_bad_grid_is_refused():
    with pytest.raises(ValueError, match=r"depths must be integers >= 2, got \[1\]"):
        born_dead.main(["depths=[1,3]"])

"""`python -m infwidth demo` (what `make demo` runs) works with tiny sizes and writes its plot."""

import os
import re

import numpy as np
import pytest

from infwidth.__main__ import main


def test_demo_prints_table_and_rate(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    assert main(["demo", "--widths", "16", "256", "--seeds", "3", "--n", "3", "--d", "4",
                 "--depth", "1", "--repeats", "2", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    rows = [line.split() for line in text.splitlines() if re.match(r"\s+\d+\s", line)]
    assert [int(r[0]) for r in rows] == [16, 256]
    errors = [float(r[1]) for r in rows]
    assert errors[0] > errors[-1] > 0
    rate = float(re.search(r"width\^(-?[\d.]+)", text).group(1))
    assert -1.0 < rate < -0.15
    assert os.path.getsize(os.path.join(tmp_path, "ntk_vs_width.png")) > 1000
    with open(os.path.join(tmp_path, "ntk_vs_width.txt")) as f:
        assert "fitted rate" in f.read()


def test_demo_other_activation(capsys, tmp_path):
    assert main(["demo", "--activation", "erf", "--widths", "16", "128", "--seeds", "2",
                 "--n", "3", "--d", "4", "--depth", "1", "--no-plot", "--repeats", "1",
                 "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "Erf network" in text and "fitted rate" in text
    assert "one repeat: pass --repeats 3" in text


def test_demo_rate_spread_is_measured_across_repeats(capsys, tmp_path):
    """The +- is the standard deviation of the rates fitted in independent repeats (fresh
    inputs and networks), not the least-squares error of one fit."""
    assert main(["demo", "--widths", "16", "256", "--seeds", "2", "--n", "3", "--d", "4",
                 "--depth", "1", "--no-plot", "--repeats", "3", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    per_repeat = re.search(r"fitted rate of each repeat: (.*)", text).group(1)
    rates = np.array([float(r) for r in per_repeat.split(",")])
    assert rates.size == 3 and np.ptp(rates) > 1e-3  # the repeats are independent draws
    mean, std = map(float, re.search(r"over 3 repeats: (-?[\d.]+) \+- ([\d.]+)", text).groups())
    assert abs(mean - rates.mean()) < 2e-3 and abs(std - rates.std(ddof=1)) < 2e-3


def test_demo_rejects_zero_repeats(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--repeats", "0"])
    assert "--repeats 0" in capsys.readouterr().err


def test_demo_rejects_unknown_command(capsys):
    with pytest.raises(SystemExit):
        main(["dance"])
    assert "invalid choice" in capsys.readouterr().err

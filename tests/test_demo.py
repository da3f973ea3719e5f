"""`python -m infwidth demo` (what `make demo` runs) works with tiny sizes and writes its plot."""

import os
import re

import pytest

from infwidth.__main__ import main


def test_demo_prints_table_and_rate(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    assert main(["demo", "--widths", "16", "256", "--seeds", "3", "--n", "3", "--d", "4",
                 "--depth", "1", "--out", str(tmp_path)]) == 0
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
                 "--n", "3", "--d", "4", "--depth", "1", "--no-plot", "--out",
                 str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "Erf network" in text and "fitted rate" in text


def test_demo_rejects_unknown_command(capsys):
    with pytest.raises(SystemExit):
        main(["dance"])
    assert "invalid choice" in capsys.readouterr().err

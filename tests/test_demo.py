"""`python -m infwidth demo` (what `make demo` runs) works with tiny sizes and writes its plot."""

import os
import re

import pytest

from infwidth.__main__ import main


def test_demo_prints_table_and_rate(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    out_png = os.path.join(tmp_path, "demo.png")
    assert main(["demo", "--widths", "16", "64", "256", "--seeds", "3", "--n", "3", "--d", "4",
                 "--depth", "1", "--plot", out_png]) == 0
    text = capsys.readouterr().out
    rows = [line.split() for line in text.splitlines() if re.match(r"\s+\d+\s", line)]
    assert [int(r[0]) for r in rows] == [16, 64, 256]
    errors = [float(r[1]) for r in rows]
    assert errors[0] > errors[-1] > 0
    rate = float(re.search(r"width\^(-?[\d.]+)", text).group(1))
    assert -1.0 < rate < -0.2
    assert os.path.getsize(out_png) > 1000


def test_demo_rejects_unknown_command(capsys):
    with pytest.raises(SystemExit):
        main(["dance"])
    assert "invalid choice" in capsys.readouterr().err

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

# tests/reference/make_*.py run under neural-tangents in its own venv; never collect them
# (--doctest-modules would import every .py file under tests/).
collect_ignore_glob = ["reference/*.py"]

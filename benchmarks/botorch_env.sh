#!/usr/bin/env bash
# Creates (once) a separate virtual environment with BoTorch 0.18.1 on the CPU build of PyTorch
# 2.13.0, pinned in botorch-requirements.txt, and prints its python. botorch_evidence.py runs it
# as a subprocess, so PyTorch never enters infwidth's environment:
#
#   python benchmarks/botorch_evidence.py --botorch-python "$(benchmarks/botorch_env.sh)"
#
# usage: benchmarks/botorch_env.sh [DIR]  (default: $BOTORCH_ENV_DIR, else
# ~/.cache/infwidth-botorch-0.18.1). TORCH_SPEC overrides the torch requirement (default
# torch==2.13.0; a CPU wheel index can be given with PIP_EXTRA_INDEX_URL, e.g.
# https://download.pytorch.org/whl/cpu, to avoid the multi-GB CUDA build).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${1:-${BOTORCH_ENV_DIR:-$HOME/.cache/infwidth-botorch-0.18.1}}
python=${BOTORCH_BASE_PYTHON:-python3}
torch_spec=${TORCH_SPEC:-torch==2.13.0}
check='import botorch, gpytorch, torch; assert botorch.__version__ == "0.18.1", botorch.__version__'
if [[ -x $dir/bin/python ]] && "$dir/bin/python" -c "$check" 2>/dev/null; then
  echo "$dir/bin/python"
  exit 0
fi
echo "botorch_env.sh: building the BoTorch 0.18.1 environment in $dir (once)" >&2
"$python" -m venv "$dir"
"$dir/bin/python" -m pip install -q "$torch_spec" >&2
"$dir/bin/python" -m pip install -q -r "$here/botorch-requirements.txt" >&2
if ! "$dir/bin/python" -c "$check" >&2; then
  echo "botorch_env.sh: BoTorch does not import in $dir; remove it and retry" >&2
  exit 1
fi
echo "$dir/bin/python"

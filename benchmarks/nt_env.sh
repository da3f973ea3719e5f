#!/usr/bin/env bash
# Creates (once) a separate virtual environment with neural-tangents 0.6.5, installed from the
# package registry with the pinned versions in nt-requirements.txt, and prints its python.
# neural-tangents needs an old JAX (0.4.25), so it cannot share an environment with infwidth;
# the benchmarks run it as a subprocess:
#
#   python benchmarks/fc_kernel.py --nt-python "$(benchmarks/nt_env.sh)"
#   make bench-nt                      # every benchmark, side by side with neural-tangents
#
# usage: benchmarks/nt_env.sh [DIR]    (default: $NT_ENV_DIR, else ~/.cache/infwidth-nt-0.6.5)
# Needs python3 3.10-3.12 with venv (tensorflow 2.21 and jaxlib 0.4.25 wheels) and network
# access to the registry the first time; later calls reuse the environment and only print.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${1:-${NT_ENV_DIR:-$HOME/.cache/infwidth-nt-0.6.5}}
python=${NT_BASE_PYTHON:-python3}
check='import neural_tangents as nt, jax; assert nt.__version__ == "0.6.5", nt.__version__'
if [[ -x $dir/bin/python ]] && TF_CPP_MIN_LOG_LEVEL=3 "$dir/bin/python" -c "$check" 2>/dev/null; then
  echo "$dir/bin/python"
  exit 0
fi
echo "nt_env.sh: building the neural-tangents 0.6.5 environment in $dir (once)" >&2
"$python" -m venv "$dir"
"$dir/bin/python" -m pip install -q --upgrade pip >&2
"$dir/bin/python" -m pip install -q -r "$here/nt-requirements.txt" >&2
if ! TF_CPP_MIN_LOG_LEVEL=3 "$dir/bin/python" -c "$check" >&2; then
  echo "nt_env.sh: neural-tangents does not import in $dir; remove it and retry" >&2
  exit 1
fi
echo "$dir/bin/python"

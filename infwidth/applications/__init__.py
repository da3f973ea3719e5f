"""Applications of infinite-width kernels to problems outside plain regression.

* `qec`: decoding the [[5,1,3]] quantum error-correcting code from its syndromes by NNGP /
  NTK kernel regression, next to the optimal (maximum-likelihood) lookup table.

>>> from infwidth.applications import qec
>>> qec.to_string(qec.five_qubit_code().logical_z)
'ZZZZZ'
"""

from . import qec

__all__ = ["qec"]

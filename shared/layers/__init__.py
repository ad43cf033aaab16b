"""The layer library both model families build on: convolutions whose transposed form is cheap
on XLA:CPU (`convolution.py`) and a 2x2 max-pool with a cheap gradient (`pooling.py`).

Import it as `from shared import layers`; the names below are the public API.
"""

from shared.layers.convolution import check_impl, Conv, ConvTranspose, IMPLS, resolve_impl
from shared.layers.pooling import max_pool_2x2

__all__ = ["check_impl", "Conv", "ConvTranspose", "IMPLS", "max_pool_2x2", "resolve_impl"]

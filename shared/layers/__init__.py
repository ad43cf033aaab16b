"""The layer library both model families build on: convolutions whose transposed form is cheap
on XLA:CPU (`convolution.py`), a 2x2 max-pool with a cheap gradient (`pooling.py`) and the
`model.dtype` compute-precision switch (`precision.py`).

Import it as `from shared import layers`; the names below are the public API.
"""

from shared.layers.convolution import check_impl, Conv, ConvTranspose, IMPLS, resolve_impl
from shared.layers.pooling import max_pool_2x2
from shared.layers.precision import check_dtype, DTYPES, model_dtype, resolve_dtype

__all__ = ["check_dtype", "check_impl", "Conv", "ConvTranspose", "DTYPES", "IMPLS",
           "max_pool_2x2", "model_dtype", "resolve_dtype", "resolve_impl"]

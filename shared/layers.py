"""`Conv` and `ConvTranspose`: drop-ins for `nn.Conv` / `nn.ConvTranspose` (2-D, NHWC) whose
transposed convolution can take its kernel gradient as a matmul (im2col) instead of from XLA.

Why: on XLA:CPU the kernel gradient of a transposed (input-dilated) convolution is very slow:
for the UNet's 2x2 stride-2 up-convolution at 16px, 256->128 channels, batch 16, forward +
backward took 681 ms with XLA's gradient and 57 ms with the im2col one (`python
benchmarks/conv_impls.py`, with the project's XLA flags, `shared/xla_flags.py`). Ordinary
convolutions are fast in XLA once YNNPACK is kept off them (those flags), so `impl="split"`
leaves them to XLA entirely and only replaces the transposed convolution's kernel gradient.
`impl="auto"` is "split" on CPU and "xla" on TPU and GPU.

Same parameters (names, shapes, initialisers, the `Conv_0` auto-names) and the same outputs as
the Flax layers up to float rounding, so checkpoints and parameter counts do not depend on
`impl`. A transposed conv is computed per output phase: for stride s, output row s*q + r only
meets the kernel taps k with (r + k - pad) divisible by s, a window of kernel/s input rows.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

IMPLS = ("auto", "split", "im2col", "xla")
_DIMS = ("NHWC", "HWIO", "NHWC")


def resolve_impl(impl: str) -> str:
  if impl not in IMPLS:
    raise ValueError(f"model.conv_impl={impl!r}; allowed: {IMPLS}")
  if impl == "auto":
    return "split" if jax.default_backend() == "cpu" else "xla"
  return impl


def _with_kernel_gradient(forward, kernel_grad):
  """`forward(x, kernel)` with XLA's own input gradient (for a transposed conv, a strided
  convolution: fast) and the kernel gradient `kernel_grad(x, g)` ("split")."""
  @jax.custom_vjp
  def f(x, kernel):
    return forward(x, kernel)

  def f_fwd(x, kernel):
    return forward(x, kernel), (x, kernel)

  def f_bwd(residuals, g):
    x, kernel = residuals
    dx = jax.vjp(lambda x: forward(x, kernel), x)[1](g)[0]
    return dx, kernel_grad(x, g).astype(kernel.dtype)

  f.defvjp(f_fwd, f_bwd)
  return f


def _compute(impl: str, xla_fn, im2col_fn, kernel_grad, x, kernel):
  """"xla" and "im2col" compute everything their way; "split" is XLA with `kernel_grad(x, g)`
  as the kernel gradient when one is given (transposed convs), plain XLA otherwise."""
  impl = resolve_impl(impl)
  if impl == "im2col":
    return im2col_fn(x, kernel)
  if impl == "xla" or kernel_grad is None:
    return xla_fn(x, kernel)
  return _with_kernel_gradient(xla_fn, kernel_grad)(x, kernel)


def _same_pads(size: int, k: int, s: int) -> tuple[int, int]:
  """XLA's SAME padding for a strided conv: output ceil(size / s)."""
  total = max((-(-size // s) - 1) * s + k - size, 0)
  return total // 2, total - total // 2


def _patches(x, kernel_hw, strides, out_hw):
  """(B, H, W, C) already padded -> (B, Ho, Wo, kh*kw*C), taps in (kh, kw, C) order."""
  (kh, kw), (sh, sw), (ho, wo) = kernel_hw, strides, out_hw
  cols = [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
          for i in range(kh) for j in range(kw)]
  return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


def conv_im2col(x, kernel, strides, pads):
  """Cross-correlation as in `lax.conv_general_dilated(x, kernel, strides, pads)`, NHWC/HWIO."""
  kh, kw, cin, cout = kernel.shape
  x = jnp.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
  ho = (x.shape[1] - kh) // strides[0] + 1
  wo = (x.shape[2] - kw) // strides[1] + 1
  p = _patches(x, (kh, kw), strides, (ho, wo))
  return jnp.dot(p, kernel.reshape(kh * kw * cin, cout))


def _transpose_taps(k: int, s: int):
  """For lax.conv_transpose(padding='SAME'), kernel k, stride s: per output phase r, the first
  input offset o_r and the kernel tap used at window position t (k // s taps per phase)."""
  pad_a = k - 1 if s > k - 1 else int(np.ceil((k + s - 2) / 2))
  taps, offsets = [], []
  for r in range(s):
    k0 = (pad_a - r) % s                      # smallest tap with (r + k - pad_a) % s == 0
    offsets.append((r + k0 - pad_a) // s)
    taps.append([k0 + s * t for t in range(k // s)])
  return np.asarray(offsets), np.asarray(taps)


def conv_transpose_im2col(x, kernel, strides):
  """`lax.conv_transpose(x, kernel, strides, 'SAME')` (kernel not flipped, as Flax's) by phases."""
  b, h, w, cin = x.shape
  kh, kw, _, cout = kernel.shape
  (sh, sw) = strides
  (oh, th), (ow, tw) = _transpose_taps(kh, sh), _transpose_taps(kw, sw)
  nh, nw = kh // sh, kw // sw
  # Window kernel: (nh, nw, cin, sh, sw, cout); phase (r1, r2), window tap (t1, t2).
  wk = kernel[th[:, :, None, None], tw[None, None, :, :]]        # (sh, nh, sw, nw, cin, cout)
  wk = wk.transpose(1, 3, 4, 0, 2, 5).reshape(nh * nw * cin, sh * sw * cout)
  lo_h, lo_w = int(oh.min()), int(ow.min())
  ph, pw = h + int(oh.max()) - lo_h, w + int(ow.max()) - lo_w    # window positions computed
  xp = jnp.pad(x, ((0, 0), (-lo_h, int(oh.max()) + nh - 1), (-lo_w, int(ow.max()) + nw - 1),
                   (0, 0)))
  y = jnp.dot(_patches(xp, (nh, nw), (1, 1), (ph, pw)), wk).reshape(b, ph, pw, sh, sw, cout)
  rows = []
  for r1 in range(sh):
    a = int(oh[r1]) - lo_h
    rows.append(jnp.stack([y[:, a:a + h, int(ow[r2]) - lo_w:int(ow[r2]) - lo_w + w, r1, r2]
                           for r2 in range(sw)], axis=3))         # (b, h, w, sw, cout)
  return jnp.stack(rows, axis=2).reshape(b, h * sh, w * sw, cout)


def _kernel_vjp(linear_in_kernel, kernel_shape, g):
  """Gradient of `sum(g * f(kernel))` for f linear in the kernel (evaluated at zeros: the
  gradient of a linear map does not depend on the point)."""
  zeros = jnp.zeros(kernel_shape, g.dtype)
  return jax.vjp(linear_in_kernel, zeros)[1](g)[0]


def _pair(v) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


class _Conv2D(nn.Module):
  """Fields and parameters both layers share with their Flax counterparts."""
  features: int
  kernel_size: Sequence[int]
  strides: int | Sequence[int] = 1
  use_bias: bool = True
  impl: str = "auto"
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

  def _apply(self, x, kernel_hw, xla_fn, im2col_fn, kernel_grad):
    """Creates `kernel` (and `bias`) as Flax does and computes `fn(x, kernel)` by `impl`;
    `kernel_grad(x, g)`, if not None, is the kernel's gradient under "split"."""
    kernel = self.param("kernel", self.kernel_init, (*kernel_hw, x.shape[-1], self.features),
                        jnp.float32)
    y = _compute(self.impl, xla_fn, im2col_fn, kernel_grad, x, kernel)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,), jnp.float32)
    return y


class Conv(_Conv2D):
  """`nn.Conv` for 2-D NHWC inputs; padding 'SAME', 'VALID' or ((lo, hi), (lo, hi))."""
  padding: str | Sequence[Sequence[int]] = "SAME"

  @nn.compact
  def __call__(self, x):
    (kh, kw), strides = _pair(self.kernel_size), _pair(self.strides)
    if self.padding == "SAME":
      pads = (_same_pads(x.shape[1], kh, strides[0]), _same_pads(x.shape[2], kw, strides[1]))
    elif self.padding == "VALID":
      pads = ((0, 0), (0, 0))
    else:
      pads = tuple(tuple(p) for p in self.padding)
    return self._apply(
        x, (kh, kw),
        lambda x, k: lax.conv_general_dilated(x, k, strides, pads, dimension_numbers=_DIMS),
        lambda x, k: conv_im2col(x, k, strides, pads),
        None)


class ConvTranspose(_Conv2D):
  """`nn.ConvTranspose` for 2-D NHWC inputs, padding 'SAME', kernel a multiple of the stride."""
  padding: str = "SAME"

  @nn.compact
  def __call__(self, x):
    (kh, kw), strides = _pair(self.kernel_size), _pair(self.strides)
    if self.padding != "SAME" or kh % strides[0] or kw % strides[1]:
      raise ValueError(f"ConvTranspose supports padding='SAME' with kernel a multiple of the "
                       f"stride; got padding={self.padding!r}, kernel {(kh, kw)}, "
                       f"strides {strides}")
    return self._apply(
        x, (kh, kw),
        lambda x, k: lax.conv_transpose(x, k, strides, "SAME", dimension_numbers=_DIMS),
        lambda x, k: conv_transpose_im2col(x, k, strides),
        lambda x, g: _kernel_vjp(lambda k: conv_transpose_im2col(x, k, strides),
                                 (kh, kw, x.shape[-1], self.features), g))

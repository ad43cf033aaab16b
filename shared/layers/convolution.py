"""`Conv` and `ConvTranspose`: drop-ins for `nn.Conv` / `nn.ConvTranspose` (2-D, NHWC) whose
transposed convolution is computed as an ordinary convolution (`impl="phase"`).

Why: XLA lowers a transposed convolution to an input-dilated one (stride-1 over an input with
s-1 zeros between pixels), and on XLA:CPU its gradients are very slow: the UNet's 2x2 stride-2
up-convolution (16px, 256->128, batch 16) took 482 ms forward + gradient as XLA's transposed
conv and 29 ms by phases, the CVAE decoder's 4x4 ones 63-95 ms and 17-19 ms (`python -m
benchmarks.investigations.conv_impls`, quiet machine; docs/performance.md). By phases: for
stride s, output row s*q + r only meets the kernel taps k with (r + k - pad) divisible by s, a
window of k/s input rows, so one stride-1 convolution with a (k/s, k/s) window and
s*s*features output channels computes every phase, and a depth-to-space interleaves them.
Everything is plain XLA (forward and autodiff), with no dilated convolution and no zeros
multiplied.

`impl`: "phase" (transposed convs by phases, ordinary convs by XLA), "xla" (XLA's own
convolutions everywhere), "im2col" (every conv as patches @ kernel: a reference, slower).
"auto" is "phase" on CPU and "xla" on TPU and GPU (XLA's own convolutions, their compilers'
native path; the phase form has not been timed there).

Same parameters (names, shapes, initialisers, the `Conv_0` auto-names) and the same outputs as
the Flax layers up to float rounding, so checkpoints and parameter counts do not depend on
`impl`. As in Flax, `dtype` is the dtype the convolution computes in (None: that of the input
and kernel) and `param_dtype` the dtype the parameters are stored in (shared/layers/precision.py).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen import dtypes
from jax import lax

from shared.errors import ConfigError

IMPLS = ("auto", "phase", "im2col", "xla")
_DIMS = ("NHWC", "HWIO", "NHWC")


def check_impl(impl: str) -> None:
  """One line naming the config field when `model.conv_impl` is not a known lowering."""
  if impl not in IMPLS:
    raise ConfigError(f"model.conv_impl={impl!r}; allowed: {IMPLS}")


def resolve_impl(impl: str) -> str:
  check_impl(impl)
  if impl == "auto":
    return "phase" if jax.default_backend() == "cpu" else "xla"
  return impl


def _compute(impl: str, fns: dict, x, kernel):
  """`fns[impl](x, kernel)`; a layer without its own "phase" form uses its "xla" one."""
  impl = resolve_impl(impl)
  return fns.get(impl, fns["xla"])(x, kernel)


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


def _conv_transpose_by_phases(x, kernel, strides, window_conv):
  """`lax.conv_transpose(x, kernel, strides, 'SAME')` (kernel not flipped, as Flax's) as one
  ordinary stride-1 convolution that emits every output phase as channels, then interleaved
  (depth-to-space). `window_conv(xp, wk)` is that convolution: VALID, NHWC / HWIO."""
  b, h, w, cin = x.shape
  kh, kw, _, cout = kernel.shape
  (sh, sw) = strides
  (oh, th), (ow, tw) = _transpose_taps(kh, sh), _transpose_taps(kw, sw)
  nh, nw = kh // sh, kw // sw
  # Window kernel: (nh, nw, cin, sh, sw, cout); phase (r1, r2), window tap (t1, t2).
  wk = kernel[th[:, :, None, None], tw[None, None, :, :]]        # (sh, nh, sw, nw, cin, cout)
  wk = wk.transpose(1, 3, 4, 0, 2, 5).reshape(nh, nw, cin, sh * sw * cout)
  lo_h, lo_w = int(oh.min()), int(ow.min())
  ph, pw = h + int(oh.max()) - lo_h, w + int(ow.max()) - lo_w    # window positions computed
  xp = jnp.pad(x, ((0, 0), (-lo_h, int(oh.max()) + nh - 1), (-lo_w, int(ow.max()) + nw - 1),
                   (0, 0)))
  y = window_conv(xp, wk).reshape(b, ph, pw, sh, sw, cout)
  if (ph, pw) == (h, w):      # every phase starts at the same input offset (e.g. kernel = stride)
    return y.transpose(0, 1, 3, 2, 4, 5).reshape(b, h * sh, w * sw, cout)
  # Phases start at different input offsets: cut each phase's channels out with one `split`
  # (whose gradient is one concatenate; separate slices would each be padded back to full
  # size and summed), then its own window of positions.
  phases = lax.split(y.reshape(b, ph, pw, sh * sw * cout), [cout] * (sh * sw), axis=3)
  top = [int(o) - lo_h for o in oh]                              # each phase's first row
  left = [int(o) - lo_w for o in ow]                             # and column
  rows = [jnp.stack([phases[r1 * sw + r2][:, top[r1]:top[r1] + h, left[r2]:left[r2] + w]
                     for r2 in range(sw)], axis=3)                 # (b, h, w, sw, cout)
          for r1 in range(sh)]
  return jnp.stack(rows, axis=2).reshape(b, h * sh, w * sw, cout)


def conv_transpose_phases(x, kernel, strides):
  """The transposed conv by phases, the window convolution done by XLA (`impl="phase"`)."""
  return _conv_transpose_by_phases(
      x, kernel, strides,
      lambda xp, wk: lax.conv_general_dilated(xp, wk, (1, 1), "VALID", dimension_numbers=_DIMS))


def conv_transpose_im2col(x, kernel, strides):
  """The transposed conv by phases, the window convolution done as patches @ kernel."""
  return _conv_transpose_by_phases(x, kernel, strides, lambda xp, wk: conv_im2col(
      xp, wk, (1, 1), ((0, 0), (0, 0))))


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
  dtype: Any = None                 # computation (None: promoted from the input and kernel)
  param_dtype: Any = jnp.float32    # storage of kernel and bias

  def _apply(self, x, kernel_hw, fns):
    """Creates `kernel` (and `bias`) as Flax does and computes `fns[impl](x, kernel)` in
    `dtype`, casting the input and parameters to it first (as Flax's layers do)."""
    kernel = self.param("kernel", self.kernel_init, (*kernel_hw, x.shape[-1], self.features),
                        self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = _compute(self.impl, fns, x, kernel)
    if bias is not None:
      y = y + bias
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
    return self._apply(x, (kh, kw), {
        "xla": lambda x, k: lax.conv_general_dilated(x, k, strides, pads,
                                                     dimension_numbers=_DIMS),
        "im2col": lambda x, k: conv_im2col(x, k, strides, pads)})


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
    return self._apply(x, (kh, kw), {
        "xla": lambda x, k: lax.conv_transpose(x, k, strides, "SAME", dimension_numbers=_DIMS),
        "im2col": lambda x, k: conv_transpose_im2col(x, k, strides),
        "phase": lambda x, k: conv_transpose_phases(x, k, strides)})

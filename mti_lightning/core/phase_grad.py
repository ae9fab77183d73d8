"""Input gradients of a frozen strided stem convolution as one stride-1 convolution.

A network's first convolution (3 colour channels in, stride 2 or a patchify stride) is the
slowest per flop of a step on a CPU: its input gradient is a transposed convolution with 3
output channels, which oneDNN vectorises poorly (resnet's 7x7 stride-2 stem: 110 ms backward
against 60 ms forward at batch 16, 224 px). Split by the parity (phase) of the input pixel,
the same gradient is a stride-1 convolution of the output gradient with ``3 x stride**2``
output channels and a kernel of ``ceil(k / stride)`` taps, followed by a pixel shuffle: the
same sums in another order, 1.3x (7x7 stride 2) to 4x (16x16 patchify) faster on this CPU.
3x3 stride-2 stems are slower that way and are left alone.

Only the input gradient changes route; the forward is the convolution itself, and the weights
are frozen (no weight gradient is ever asked for on the step network).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MAX_IN_CHANNELS = 4


def phase_weight(weight: torch.Tensor, stride: int) -> torch.Tensor:
    """``(in * s * s, out, ceil(kh/s), ceil(kw/s))``: the kernel that maps the output gradient
    to the ``s x s`` phases of the (padded) input gradient, phases last in channel order as
    ``pixel_shuffle`` expects; taps are flipped (a transposed convolution as a correlation)."""
    out_c, in_c, kh, kw = weight.shape
    th, tw = -(-kh // stride), -(-kw // stride)
    padded = F.pad(weight, (0, tw * stride - kw, 0, th * stride - kh))
    taps = padded.reshape(out_c, in_c, th, stride, tw, stride).flip(2).flip(4)
    return taps.permute(1, 3, 5, 0, 2, 4).reshape(in_c * stride * stride, out_c, th, tw)


def phase_input_grad(
    grad_out: torch.Tensor,
    kernel: torch.Tensor,
    stride: int,
    size: tuple[int, int],
    padding: tuple[int, int],
) -> torch.Tensor:
    """The input gradient ``(N, in, H, W)`` of a stride-``stride`` convolution from its output
    gradient, with ``kernel`` from ``phase_weight``."""
    th, tw = kernel.shape[-2:]
    phases = F.conv2d(grad_out, kernel.to(grad_out.dtype), padding=(th - 1, tw - 1))
    full = F.pixel_shuffle(phases, stride)
    (h, w), (ph, pw) = size, padding
    short_h, short_w = ph + h - full.shape[-2], pw + w - full.shape[-1]
    if short_h > 0 or short_w > 0:  # input pixels no window reaches have zero gradient
        full = F.pad(full, (0, max(short_w, 0), 0, max(short_h, 0)))
    return full[:, :, ph : ph + h, pw : pw + w]


class _PhaseGradConv(torch.autograd.Function):
    """Forward: the convolution. Backward: the input gradient by phases (differentiable, so
    a double backward through it works too)."""

    @staticmethod
    def forward(ctx, x, weight, bias, kernel, stride, padding):
        ctx.save_for_backward(kernel)
        ctx.size, ctx.stride, ctx.padding, ctx.dtype = x.shape[-2:], stride, padding, x.dtype
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, grad_out):
        grad_x = None
        if ctx.needs_input_grad[0]:
            (kernel,) = ctx.saved_tensors
            grad_x = phase_input_grad(
                grad_out, kernel, ctx.stride, tuple(ctx.size), ctx.padding
            ).to(ctx.dtype)
        return grad_x, None, None, None, None, None


class PhaseGradConv2d(nn.Conv2d):
    """A frozen ``nn.Conv2d`` (same parameters and name) whose input gradient is computed by
    phases (see the module doc)."""

    phase_kernel: torch.Tensor

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> PhaseGradConv2d:
        """The same convolution, sharing ``conv``'s weight and bias."""
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            bias=conv.bias is not None,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        new.weight, new.bias = conv.weight, conv.bias
        with torch.no_grad():
            kernel = phase_weight(conv.weight.detach(), conv.stride[0])
        new.register_buffer("phase_kernel", kernel, persistent=False)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() or not x.requires_grad:
            return super().forward(x)
        return _PhaseGradConv.apply(
            x, self.weight, self.bias, self.phase_kernel, self.stride[0], self.padding
        )


def phase_grad_pays(conv: nn.Module) -> bool:
    """Whether ``conv`` is a frozen, plain, strided few-channel convolution of a shape where
    the phase route measured faster: patchify (kernel = stride) or a kernel of at least
    ``2 * stride + 1`` taps (resnet's 7x7 stride 2), not a 3x3 stride-2 stem."""
    if type(conv) is not nn.Conv2d or conv.weight.requires_grad:
        return False
    (sh, sw), (kh, kw) = conv.stride, conv.kernel_size
    plain = (
        conv.groups == 1
        and conv.dilation == (1, 1)
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and conv.in_channels <= MAX_IN_CHANNELS
    )
    shape_pays = sh == sw >= 2 and all(k == sh or k >= 2 * sh + 1 for k in (kh, kw))
    return plain and shape_pays

"""The adapter's quadratic term on a depthwise layer as one fused CPU kernel (`csrc/depthwise_quadratic.cpp`).

On a depthwise primary, P(A x * B x) has one input and one output channel per group, and the factor convs
have 2 x rank outputs per channel: a channel multiplier for which oneDNN has no fast CPU kernel (the factor
work ran several times slower per FLOP than the first-order network's). The kernel computes the term in one pass over
channels-last memory and recomputes the factors in backward, so it never stores the 2 x rank factor maps.
The rbf kernels (`adapter.py`) run the same way: one kernel computes the exponent
sum_r (GELU(A_r x_a) - GELU(B_r x_b))^2 / (2 sigma^2) (x_a = x_b = x for rbf; P_a x, P_b x for rbf_in), and
BatchNorm, exp and P follow in two fused elementwise passes (`rbf_tail`) with BatchNorm's statistics and backward.

It is compiled once per machine on first use (torch's C++ extension builder, cached under
`TORCH_EXTENSIONS_DIR` or ~/.cache/torch_extensions); where it cannot be built (no C++ compiler) the adapter
falls back to the grouped-conv formulation, with one warning. `QUADRANET_FUSED=0` turns it off.
"""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from .grouped import ConvGeometry, fast_cpu, numeric_padding

SOURCE = Path(__file__).with_name("csrc") / "depthwise_quadratic.cpp"


def _isa_flags() -> list[str]:
    """AVX2/FMA where this CPU has them; named in the build so a shared cache never serves another CPU's build."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return []
    return ["-mavx2", "-mfma"] if platform.machine() == "x86_64" and {"avx2", "fma"} <= set(flags) else []


_OFF = [False]


@contextmanager
def disabled():
    """Run the grouped-conv formulation instead of the kernel: autograd's standard backward, which keeps the
    factor maps (the reference the memory-efficient backward is measured against, `quadranet bench`)."""
    _OFF.append(True)
    try:
        yield
    finally:
        _OFF.pop()


_BUILT: dict = {}  # "ops": what `_build` returned (a plain dict, which torch.compile reads without tracing a build)


def ops():
    """torch.ops.quadranet_cpu once the kernel is built and loaded, or None (with one warning saying why)."""
    if "ops" not in _BUILT:
        _BUILT["ops"] = _build()
    return _BUILT["ops"]


def _build():
    if os.environ.get("QUADRANET_FUSED", "1") == "0":
        return None
    try:
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA runtime" on CPU hosts
        from torch.utils import cpp_extension

        _environment_ninja_first()
        isa = _isa_flags()
        # no-trapping-math lets the compiler if-convert and vectorise the rbf kernel's GELU (values unchanged)
        cflags = ["-O3", "-fno-trapping-math", "-fopenmp", *isa]
        digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(cflags).encode()).hexdigest()[:12]
        cpp_extension.load(
            # named by source, flags and ISA: builds of other versions or CPUs in a shared cache never collide
            name=f"quadranet_dwq_{digest}" + ("_avx2" if isa else ""),
            sources=[str(SOURCE)],
            extra_cflags=cflags,
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
            verbose=False,
        )
        _register_fakes()
        return torch.ops.quadranet_cpu
    except Exception as err:  # no compiler, no ninja, a read-only cache: the grouped-conv path still works
        warnings.warn(f"quadranet: the fused CPU quadratic kernel could not be built ({type(err).__name__}: "
                      f"{str(err).strip().splitlines()[-1] if str(err).strip() else ''}); using the grouped-conv "
                      f"formulation, which is slower on the CPU", RuntimeWarning, stacklevel=2)
        return None


def _environment_ninja_first() -> None:
    """Put the environment's ninja (the pip package, a dependency) before any other on PATH. Ninja versions keep
    incompatible build logs, so a build run alternately by /usr/bin/ninja and the package's rebuilt the kernel
    at every switch, e.g. between a shell with the venv activated and one without."""
    try:
        import ninja
    except ImportError:
        return
    path = os.environ.get("PATH", "")
    if not path.startswith(ninja.BIN_DIR + os.pathsep):
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + path


def _register_fakes() -> None:
    """Shape functions, so that torch.compile traces through the kernel instead of failing on it."""
    def out_size(size, k, s, p, d):
        return (size + 2 * p - d * (k - 1) - 1) // s + 1

    @torch.library.register_fake("quadranet_cpu::dwq_forward")
    def _(x, wa, wb, p, kernel, stride, padding, dilation):
        n, c, h, w = x.shape
        ho, wo = (out_size(*args) for args in zip((h, w), kernel, stride, padding, dilation))
        return x.new_empty((n, c, ho, wo)).contiguous(memory_format=torch.channels_last)

    @torch.library.register_fake("quadranet_cpu::dwq_backward")
    def _(grad, x, wa, wb, p, kernel, stride, padding, dilation, need_x):
        return [torch.empty_like(x) if need_x else x.new_empty((0,)), torch.empty_like(wa), torch.empty_like(wb),
                torch.empty_like(p)]

    @torch.library.register_fake("quadranet_cpu::dwk_forward")
    def _(xa, xb, wa, wb, p, kind, kernel, stride, padding, dilation):
        n, c, h, w = xa.shape
        ho, wo = (out_size(*args) for args in zip((h, w), kernel, stride, padding, dilation))
        return xa.new_empty((n, c, ho, wo)).contiguous(memory_format=torch.channels_last)

    @torch.library.register_fake("quadranet_cpu::rbf_tail_forward")
    def _(e, p, a, b):
        return torch.empty_like(e, memory_format=torch.channels_last)

    @torch.library.register_fake("quadranet_cpu::channel_stats")
    def _(e):
        return [e.new_empty((e.shape[1],)), e.new_empty((e.shape[1],))]

    @torch.library.register_fake("quadranet_cpu::rbf_tail_backward")
    def _(grad, e, p, a, b, mean, inv_std, gamma, training):
        return [torch.empty_like(e, memory_format=torch.channels_last), torch.empty_like(p), torch.empty_like(p),
                torch.empty_like(p)]

    @torch.library.register_fake("quadranet_cpu::dwk_backward")
    def _(grad, xa, xb, wa, wb, p, kind, kernel, stride, padding, dilation, need_xa, need_xb):
        return [torch.empty_like(xa) if need_xa else xa.new_empty((0,)),
                torch.empty_like(xb) if need_xb else xb.new_empty((0,)), torch.empty_like(wa), torch.empty_like(wb),
                torch.empty_like(p)]


class DepthwiseQuadraticFn(torch.autograd.Function):
    """sum_r P_r (A_r * x)(B_r * x) per channel; weights packed as A, B (taps, rank, C) and P (rank, C)."""

    @staticmethod
    def forward(ctx, x, wa, wb, p, kernel, stride, padding, dilation):
        x = x.contiguous(memory_format=torch.channels_last)
        ctx.save_for_backward(x, wa, wb, p)
        ctx.geometry = (kernel, stride, padding, dilation)
        return torch.ops.quadranet_cpu.dwq_forward(x, wa, wb, p, *ctx.geometry)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, wa, wb, p = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last)
        gx, ga, gb, gp = torch.ops.quadranet_cpu.dwq_backward(grad, x, wa, wb, p, *ctx.geometry,
                                                              ctx.needs_input_grad[0])
        return (gx if ctx.needs_input_grad[0] else None), ga, gb, gp, None, None, None, None


def applies(x: Tensor, weight_a: Tensor, weight_p: Tensor, geom: ConvGeometry) -> bool:
    """True where the fused kernel computes the term: a depthwise term (one input and one output channel per
    group) on a float32/float64 CPU tensor outside autocast and `conv_formulation`, with the kernel built."""
    return (not _OFF[-1] and fast_cpu(x) and x.dim() == 4 and x.dtype in (torch.float32, torch.float64)
            and not torch.is_autocast_enabled("cpu") and weight_a.shape[1] == 1
            and geom.groups == x.shape[1] == weight_p.shape[0] and weight_p.shape[1] * geom.groups == weight_a.shape[0]
            and ops() is not None)


def depthwise_quadratic(x: Tensor, weight_a: Tensor, weight_b: Tensor, weight_p: Tensor,
                        geom: ConvGeometry) -> Optional[Tensor]:
    """P(A x * B x) for a depthwise term through the fused kernel, in x's memory format; None where it does not apply.

    weight_a, weight_b: (C * rank, 1, kh, kw) factor convs, grouped per channel; weight_p: (C, rank, 1, 1)."""
    if not applies(x, weight_a, weight_p, geom):
        return None
    c, rank = weight_p.shape[:2]
    kernel = tuple(weight_a.shape[-2:])

    def packed(w: Tensor) -> Tensor:  # (C * rank, 1, kh, kw) -> (kh * kw, rank, C)
        return w.reshape(c, rank, -1).permute(2, 1, 0).contiguous()

    out = DepthwiseQuadraticFn.apply(x, packed(weight_a), packed(weight_b), weight_p.reshape(c, rank).t().contiguous(),
                                     list(kernel), list(geom.stride), list(numeric_padding(geom, kernel)),
                                     list(geom.dilation))
    return out if x.is_contiguous(memory_format=torch.channels_last) else out.contiguous()



class DepthwiseRBFExponentFn(torch.autograd.Function):
    """sum_r scale (GELU(A_r * x_a) - GELU(B_r * x_b))^2 per channel (the rbf kernel's exponent), factors recomputed
    in backward; x_b is x_a for one input. Weights packed as A, B (taps, rank, C); `p` is scale everywhere."""

    @staticmethod
    def forward(ctx, x_a, x_b, wa, wb, p, kernel, stride, padding, dilation):
        one = x_b is None
        x_a = x_a.contiguous(memory_format=torch.channels_last)
        x_b = x_a if one else x_b.contiguous(memory_format=torch.channels_last)
        ctx.save_for_backward(x_a, None if one else x_b, wa, wb, p)
        ctx.geometry = (kernel, stride, padding, dilation)
        return torch.ops.quadranet_cpu.dwk_forward(x_a, x_b, wa, wb, p, 1, *ctx.geometry)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x_a, x_b, wa, wb, p = ctx.saved_tensors
        one = x_b is None
        grad = grad.contiguous(memory_format=torch.channels_last)
        need_a, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gxa, gxb, ga, gb, _ = torch.ops.quadranet_cpu.dwk_backward(grad, x_a, x_a if one else x_b, wa, wb, p, 1,
                                                                   *ctx.geometry, need_a, need_b and not one)
        return (gxa if need_a else None), (gxb if need_b and not one else None), ga, gb, None, None, None, None, None


def depthwise_rbf_exponent(x_a: Tensor, x_b: Optional[Tensor], weight_a: Tensor, weight_b: Tensor, scale: float,
                           geom: ConvGeometry) -> Optional[Tensor]:
    """The rbf kernel's exponent scale * sum_r (GELU(A_r x_a) - GELU(B_r x_b))^2 per channel of a depthwise term
    through the fused kernel, in x_a's memory format; None where it does not apply (x_b=None: both read x_a).

    weight_a, weight_b: (C * rank, 1, kh, kw) factor convs, grouped per channel."""
    c = x_a.shape[1] if x_a.dim() == 4 else -1
    if c < 1 or weight_a.shape[0] % c or (x_b is not None and x_b.shape != x_a.shape):
        return None
    rank = weight_a.shape[0] // c
    p = weight_a.new_full((rank, c), scale)
    if not applies(x_a, weight_a, p.t().reshape(c, rank, 1, 1), geom):
        return None
    kernel = tuple(weight_a.shape[-2:])

    def packed(w: Tensor) -> Tensor:  # (C * rank, 1, kh, kw) -> (kh * kw, rank, C)
        return w.reshape(c, rank, -1).permute(2, 1, 0).contiguous()

    out = DepthwiseRBFExponentFn.apply(x_a, x_b, packed(weight_a), packed(weight_b), p, list(kernel),
                                       list(geom.stride), list(numeric_padding(geom, kernel)), list(geom.dilation))
    # channels innermost (channels-last, or rbf_in's channel slices of a channels-last map): stay channels-last
    return out if x_a.stride(1) == 1 else out.contiguous()


class RBFTailFn(torch.autograd.Function):
    """p exp(-(gamma (e - mean) inv_std + beta)) per channel of a channels-last e, with BatchNorm's backward (the
    batch statistics' dependence on e included where `training`); `mean`, `inv_std` are constants here."""

    @staticmethod
    def forward(ctx, e, p, gamma, beta, mean, inv_std, training):
        a = -gamma * inv_std
        b = gamma * mean * inv_std - beta
        ctx.save_for_backward(e, p, a, b, mean, inv_std, gamma)
        ctx.training = training
        return torch.ops.quadranet_cpu.rbf_tail_forward(e, p, a, b)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        e, p, a, b, mean, inv_std, gamma = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last)
        de, dp, dgamma, dbeta = torch.ops.quadranet_cpu.rbf_tail_backward(grad, e, p, a, b, mean, inv_std, gamma,
                                                                          ctx.training)
        return de, dp, dgamma, dbeta, None, None, None


def rbf_tail(e: Tensor, norm: torch.nn.BatchNorm2d, weight_p: Tensor) -> Optional[Tensor]:
    """P exp(-norm(e)) for the exponent e of a depthwise rbf term (weight_p: (C, 1, 1, 1)) in two fused passes, with
    `norm`'s semantics (batch statistics and running-statistics update in training, running statistics in eval);
    None where the fused kernel does not apply (then the caller runs the modules)."""
    c = e.shape[1] if e.dim() == 4 else -1
    if (_OFF[-1] or not fast_cpu(e) or e.dtype not in (torch.float32, torch.float64) or torch.is_autocast_enabled("cpu")
            or not e.is_contiguous(memory_format=torch.channels_last) or weight_p.shape != (c, 1, 1, 1)
            or not norm.affine or ops() is None):
        return None
    batch_stats = norm.training or not norm.track_running_stats
    if batch_stats:
        var, mean = torch.ops.quadranet_cpu.channel_stats(e.detach())  # faster than torch.var_mean over N, H, W
        if norm.training and norm.track_running_stats:  # as F.batch_norm: unbiased variance in the running one
            # through .data, as BatchNorm updates them: no version bump, so a pending backward of an earlier
            # forward through BatchNorm2d (which saves the running statistics) still runs
            norm.num_batches_tracked.data.add_(1)
            m = (1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum)
            n = e.numel() // c
            norm.running_mean.data.mul_(1 - m).add_(mean, alpha=m)
            norm.running_var.data.mul_(1 - m).add_(var * (n / max(n - 1, 1)), alpha=m)
    else:
        mean, var = norm.running_mean, norm.running_var
    inv_std = torch.rsqrt(var + norm.eps)
    return RBFTailFn.apply(e, weight_p.reshape(c), norm.weight, norm.bias, mean.contiguous(), inv_std.contiguous(),
                           batch_stats).reshape(e.shape)

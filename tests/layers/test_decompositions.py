"""The standard-op decompositions that replace the fused CPU kernels in exported graphs equal the kernels in float64,
for every geometry the adapters meet, and every forward op the library loads has one."""
import pytest
import torch

from quadranet.layers import fused
from quadranet.layers.decompositions import DECOMPOSITIONS, NAMESPACE, decomposition_table, dwk_forward, dwq_forward

# (channels, rank, kernel, stride, padding, dilation, height, width)
GEOMETRIES = [
    (8, 4, 3, 1, 2, 2, 8, 8),  # the adapter's default: 3 x 3, dilation 2
    (8, 4, 3, 1, 2, 2, 2, 2),  # a small map: one tap reads the input (an elementwise product)
    (3, 1, 3, 1, 2, 2, 1, 1),
    (5, 2, 3, 2, 2, 2, 9, 7),  # strided
    (6, 3, 5, 2, 2, 1, 7, 8),  # EfficientNet's 5 x 5 strided layers
    (4, 5, 7, 1, 3, 1, 6, 6),
    (4, 2, 3, 1, 1, 1, 5, 4),
]

needs_kernel = pytest.mark.skipif(fused.ops() is None, reason="the fused CPU kernel could not be built here")


def _args(c, r, k, s, p, d, h, w):
    x = torch.randn(2, c, h, w, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    wa, wb = torch.randn(k * k, r, c, dtype=torch.float64), torch.randn(k * k, r, c, dtype=torch.float64)
    return x, wa, wb, torch.randn(r, c, dtype=torch.float64), ([k, k], [s, s], [p, p], [d, d])


@needs_kernel
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_dwq_forward_decomposition_equals_the_kernel(geometry):
    x, wa, wb, p, geom = _args(*geometry)
    torch.testing.assert_close(dwq_forward(x, wa, wb, p, *geom), fused.ops().dwq_forward(x, wa, wb, p, *geom),
                               rtol=1e-10, atol=1e-12)


@needs_kernel
@pytest.mark.parametrize("kind", [0, 1], ids=["bilinear", "rbf"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("inputs", ["one", "two"])
def test_dwk_forward_decomposition_equals_the_kernel(geometry, kind, inputs):
    x, wa, wb, p, geom = _args(*geometry)
    xb = x if inputs == "one" else torch.randn_like(x)
    torch.testing.assert_close(dwk_forward(x, xb, wa, wb, p, kind, *geom),
                               fused.ops().dwk_forward(x, xb, wa, wb, p, kind, *geom), rtol=1e-10, atol=1e-12)


@needs_kernel
def test_every_forward_op_of_the_library_has_a_decomposition():
    # a new fused kernel must come with its decomposition, or models using it cannot be exported
    names = [n for n in torch._C._dispatch_get_all_op_names() if n.startswith(NAMESPACE + "::")]
    # ops other tests register in the namespace (named _test_*) are not the library's
    forward = [n for n in names if not n.endswith("_backward") and not n.split("::")[1].startswith("_test")]
    assert forward and set(forward) <= set(DECOMPOSITIONS), set(forward) - set(DECOMPOSITIONS)
    table = decomposition_table()
    assert torch.ops.quadranet_cpu.dwq_forward.default in table


@needs_kernel
def test_rbf_tail_and_channel_stats_decompositions_equal_the_kernel():
    from quadranet.layers.decompositions import channel_stats, rbf_tail_forward

    e = torch.rand(3, 6, 5, 4, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    p, a, b = torch.randn(6, dtype=torch.float64), -torch.rand(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    torch.testing.assert_close(rbf_tail_forward(e, p, a, b), fused.ops().rbf_tail_forward(e, p, a, b),
                               rtol=1e-10, atol=1e-12)
    for got, want in zip(channel_stats(e), fused.ops().channel_stats(e)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)

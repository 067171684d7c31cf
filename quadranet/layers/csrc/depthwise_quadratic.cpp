// The quadratic adapter's term on a depthwise layer, fused, for the CPU:
//
//     out[n, c, o] = sum_r P[r, c] * (sum_t A[t, r, c] x[n, c, o + t]) * (sum_t B[t, r, c] x[n, c, o + t])
//
// where t runs over the taps of a (strided, dilated, zero-padded) kernel. One pass reads each input pixel's
// taps once per output pixel and writes only the C-channel term; the 2 x rank factor maps are never stored,
// and backward recomputes them from x (so this is also the memory-efficient path). Tensors are channels-last
// (N, H, W, C in memory), so every inner loop runs over contiguous channels and vectorises. Weights come
// packed: A, B as (taps, rank, C), P as (rank, C). Taps that fall into the padding are skipped, so on small
// maps (a 3x3 dilation-2 factor on a 2x2 map reads its centre tap alone) only the live taps cost anything.
//
// Registered as torch.ops.quadranet_cpu.dwq_forward / dwq_backward; quadranet/layers/fused.py builds and wraps it.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace {

constexpr int64_t kBlock = 64;  // channels per block: the factor accumulators (2 x rank x 64) stay in L1

struct Geometry {
  int64_t n, h, w, c, rank, kh, kw, ho, wo, sh, sw, ph, pw, dh, dw;

  // Offsets into x (and tap indices) of the taps of output pixel (n, ho, wo) that read the input.
  int live_taps(int64_t n_, int64_t o_h, int64_t o_w, int64_t* offset, int64_t* tap) const {
    int count = 0;
    for (int64_t i = 0; i < kh; ++i) {
      const int64_t hi = o_h * sh - ph + i * dh;
      if (hi < 0 || hi >= h) continue;
      for (int64_t j = 0; j < kw; ++j) {
        const int64_t wi = o_w * sw - pw + j * dw;
        if (wi < 0 || wi >= w) continue;
        offset[count] = ((n_ * h + hi) * w + wi) * c;
        tap[count++] = i * kw + j;
      }
    }
    return count;
  }
};

// a[r][k], b[r][k] = the two factors of rank r at channel c0 + k, over the live taps.
template <typename T>
inline void factors(const Geometry& g, const T* __restrict__ x, const T* __restrict__ wa, const T* __restrict__ wb,
                    int taps, const int64_t* offset, const int64_t* tap, int64_t c0, int64_t cb,
                    T* __restrict__ a, T* __restrict__ b) {
  std::fill(a, a + g.rank * kBlock, T(0));
  std::fill(b, b + g.rank * kBlock, T(0));
  for (int i = 0; i < taps; ++i) {
    const T* __restrict__ xp = x + offset[i] + c0;
    for (int64_t r = 0; r < g.rank; ++r) {
      const T* __restrict__ ap = wa + (tap[i] * g.rank + r) * g.c + c0;
      const T* __restrict__ bp = wb + (tap[i] * g.rank + r) * g.c + c0;
      T* __restrict__ ar = a + r * kBlock;
      T* __restrict__ br = b + r * kBlock;
      for (int64_t k = 0; k < cb; ++k) {
        ar[k] += ap[k] * xp[k];
        br[k] += bp[k] * xp[k];
      }
    }
  }
}

template <typename T>
void forward_kernel(const Geometry& g, const T* x, const T* wa, const T* wb, const T* p, T* out) {
  at::parallel_for(0, g.n * g.ho, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(2 * g.rank * kBlock);
    std::vector<int64_t> offset(g.kh * g.kw), tap(g.kh * g.kw);
    T* a = buf.data();
    T* b = a + g.rank * kBlock;
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / g.ho, oh = row % g.ho;
      for (int64_t ow = 0; ow < g.wo; ++ow) {
        const int taps = g.live_taps(n, oh, ow, offset.data(), tap.data());
        T* __restrict__ o = out + ((n * g.ho + oh) * g.wo + ow) * g.c;
        for (int64_t c0 = 0; c0 < g.c; c0 += kBlock) {
          const int64_t cb = std::min(kBlock, g.c - c0);
          factors(g, x, wa, wb, taps, offset.data(), tap.data(), c0, cb, a, b);
          for (int64_t k = 0; k < cb; ++k) o[c0 + k] = T(0);
          for (int64_t r = 0; r < g.rank; ++r) {
            const T* __restrict__ pr = p + r * g.c + c0;
            const T* __restrict__ ar = a + r * kBlock;
            const T* __restrict__ br = b + r * kBlock;
            for (int64_t k = 0; k < cb; ++k) o[c0 + k] += pr[k] * ar[k] * br[k];
          }
        }
      }
    }
  });
}

// Images are split into fixed chunks, each with its own weight-gradient accumulator, summed in chunk order:
// the result does not depend on how the threads were scheduled. Each chunk owns its images' input gradient.
template <typename T>
void backward_kernel(const Geometry& g, const T* grad, const T* x, const T* wa, const T* wb, const T* p,
                     T* gx, T* acc, int64_t chunks) {
  const int64_t per_chunk = (2 * g.kh * g.kw + 1) * g.rank * g.c;
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(4 * g.rank * kBlock);
    std::vector<int64_t> offset(g.kh * g.kw), tap(g.kh * g.kw);
    T* a = buf.data();
    T* b = a + g.rank * kBlock;
    T* ga = b + g.rank * kBlock;
    T* gb = ga + g.rank * kBlock;
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      T* gwa = acc + chunk * per_chunk;
      T* gwb = gwa + g.kh * g.kw * g.rank * g.c;
      T* gp = gwb + g.kh * g.kw * g.rank * g.c;
      for (int64_t n = chunk * g.n / chunks; n < (chunk + 1) * g.n / chunks; ++n) {
        for (int64_t oh = 0; oh < g.ho; ++oh) {
          for (int64_t ow = 0; ow < g.wo; ++ow) {
            const int taps = g.live_taps(n, oh, ow, offset.data(), tap.data());
            const T* __restrict__ go = grad + ((n * g.ho + oh) * g.wo + ow) * g.c;
            for (int64_t c0 = 0; c0 < g.c; c0 += kBlock) {
              const int64_t cb = std::min(kBlock, g.c - c0);
              factors(g, x, wa, wb, taps, offset.data(), tap.data(), c0, cb, a, b);
              for (int64_t r = 0; r < g.rank; ++r) {
                const T* __restrict__ pr = p + r * g.c + c0;
                T* __restrict__ gpr = gp + r * g.c + c0;
                const T* __restrict__ ar = a + r * kBlock;
                const T* __restrict__ br = b + r * kBlock;
                T* __restrict__ gar = ga + r * kBlock;
                T* __restrict__ gbr = gb + r * kBlock;
                for (int64_t k = 0; k < cb; ++k) {
                  const T gv = go[c0 + k];
                  gpr[k] += gv * ar[k] * br[k];
                  gar[k] = gv * pr[k] * br[k];  // dL/da
                  gbr[k] = gv * pr[k] * ar[k];  // dL/db
                }
              }
              for (int i = 0; i < taps; ++i) {
                const T* __restrict__ xp = x + offset[i] + c0;
                T* __restrict__ gxp = gx == nullptr ? nullptr : gx + offset[i] + c0;
                for (int64_t r = 0; r < g.rank; ++r) {
                  const int64_t w_at = (tap[i] * g.rank + r) * g.c + c0;
                  const T* __restrict__ gar = ga + r * kBlock;
                  const T* __restrict__ gbr = gb + r * kBlock;
                  T* __restrict__ gwar = gwa + w_at;
                  T* __restrict__ gwbr = gwb + w_at;
                  for (int64_t k = 0; k < cb; ++k) {
                    gwar[k] += gar[k] * xp[k];
                    gwbr[k] += gbr[k] * xp[k];
                  }
                  if (gxp != nullptr) {
                    const T* __restrict__ ap = wa + w_at;
                    const T* __restrict__ bp = wb + w_at;
                    for (int64_t k = 0; k < cb; ++k) gxp[k] += gar[k] * ap[k] + gbr[k] * bp[k];
                  }
                }
              }
            }
          }
        }
      }
    }
  });
}

Geometry geometry(const at::Tensor& x, const at::Tensor& wa, at::IntArrayRef kernel, at::IntArrayRef stride,
                  at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "dwq: x must be a channels-last contiguous 4-d tensor");
  TORCH_CHECK(kernel.size() == 2 && stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "dwq: kernel, stride, padding, dilation must have two entries each");
  Geometry g{};
  g.n = x.size(0), g.c = x.size(1), g.h = x.size(2), g.w = x.size(3);
  g.kh = kernel[0], g.kw = kernel[1], g.sh = stride[0], g.sw = stride[1];
  g.ph = padding[0], g.pw = padding[1], g.dh = dilation[0], g.dw = dilation[1];
  TORCH_CHECK(wa.dim() == 3 && wa.size(0) == g.kh * g.kw && wa.size(2) == g.c && wa.is_contiguous(),
              "dwq: packed factor weights must be contiguous (taps, rank, channels)");
  g.rank = wa.size(1);
  g.ho = (g.h + 2 * g.ph - g.dh * (g.kh - 1) - 1) / g.sh + 1;
  g.wo = (g.w + 2 * g.pw - g.dw * (g.kw - 1) - 1) / g.sw + 1;
  TORCH_CHECK(g.ho > 0 && g.wo > 0, "dwq: the kernel does not fit the input");
  return g;
}

void check_like(const at::Tensor& t, const at::Tensor& x, at::IntArrayRef shape, const char* what) {
  TORCH_CHECK(t.sizes() == shape && t.is_contiguous() && t.scalar_type() == x.scalar_type(), "dwq: ", what,
              " must be contiguous, of shape ", shape, " and of x's dtype");
}

at::Tensor dwq_forward(const at::Tensor& x, const at::Tensor& wa, const at::Tensor& wb, const at::Tensor& p,
                       at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
                       at::IntArrayRef dilation) {
  const Geometry g = geometry(x, wa, kernel, stride, padding, dilation);
  check_like(wa, x, wa.sizes(), "A");
  check_like(wb, x, wa.sizes(), "B");
  check_like(p, x, {g.rank, g.c}, "P");
  at::Tensor out = at::empty({g.n, g.c, g.ho, g.wo}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dwq_forward", [&] {
    forward_kernel<scalar_t>(g, x.data_ptr<scalar_t>(), wa.data_ptr<scalar_t>(), wb.data_ptr<scalar_t>(),
                             p.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
  });
  return out;
}

// Returns (grad x or an empty tensor, grad A, grad B, grad P).
std::vector<at::Tensor> dwq_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& wa,
                                     const at::Tensor& wb, const at::Tensor& p, at::IntArrayRef kernel,
                                     at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                     bool need_x) {
  const Geometry g = geometry(x, wa, kernel, stride, padding, dilation);
  TORCH_CHECK(grad.sizes() == at::IntArrayRef({g.n, g.c, g.ho, g.wo}) &&
                  grad.is_contiguous(at::MemoryFormat::ChannelsLast) && grad.scalar_type() == x.scalar_type(),
              "dwq: grad must be channels-last contiguous, of the output's shape and x's dtype");
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(g.n, at::get_num_threads()));
  const int64_t taps_rank_c = g.kh * g.kw * g.rank * g.c;
  at::Tensor acc = at::zeros({chunks, 2 * taps_rank_c + g.rank * g.c}, x.options());
  at::Tensor gx = need_x ? at::zeros_like(x) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dwq_backward", [&] {
    backward_kernel<scalar_t>(g, grad.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), wa.data_ptr<scalar_t>(),
                              wb.data_ptr<scalar_t>(), p.data_ptr<scalar_t>(),
                              need_x ? gx.data_ptr<scalar_t>() : nullptr, acc.data_ptr<scalar_t>(), chunks);
  });
  at::Tensor total = acc.sum(0);
  return {need_x ? gx : at::empty({0}, x.options()), total.slice(0, 0, taps_rank_c).view(wa.sizes()),
          total.slice(0, taps_rank_c, 2 * taps_rank_c).view(wa.sizes()),
          total.slice(0, 2 * taps_rank_c).view({g.rank, g.c})};
}

}  // namespace

TORCH_LIBRARY(quadranet_cpu, m) {
  m.def("dwq_forward(Tensor x, Tensor wa, Tensor wb, Tensor p, int[] kernel, int[] stride, int[] padding, "
        "int[] dilation) -> Tensor");
  m.def("dwq_backward(Tensor grad, Tensor x, Tensor wa, Tensor wb, Tensor p, int[] kernel, int[] stride, "
        "int[] padding, int[] dilation, bool need_x) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(quadranet_cpu, CPU, m) {
  m.impl("dwq_forward", &dwq_forward);
  m.impl("dwq_backward", &dwq_backward);
}

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

// Register-blocked blocks of V channels for a rank known at compile time: the 2 x R factor accumulators stay in
// vector registers across the taps (the generic path below keeps them in memory and runs 3-8x slower).
template <typename T, int R, int V>
inline void factors_block(const Geometry& g, const T* __restrict__ x, const T* __restrict__ wa,
                          const T* __restrict__ wb, int taps, const int64_t* offset, const int64_t* tap, int64_t c0,
                          T (&a)[R][V], T (&b)[R][V]) {
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) a[r][v] = b[r][v] = T(0);
  for (int i = 0; i < taps; ++i) {
    const T* __restrict__ xp = x + offset[i] + c0;
    const T* __restrict__ ap = wa + tap[i] * R * g.c + c0;
    const T* __restrict__ bp = wb + tap[i] * R * g.c + c0;
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < V; ++v) {
        a[r][v] += ap[r * g.c + v] * xp[v];
        b[r][v] += bp[r * g.c + v] * xp[v];
      }
  }
}

template <typename T, int R, int V>
inline void forward_block(const Geometry& g, const T* x, const T* wa, const T* wb, const T* __restrict__ p,
                          int taps, const int64_t* offset, const int64_t* tap, int64_t c0, T* __restrict__ o) {
  T a[R][V], b[R][V], acc[V] = {};
  factors_block<T, R, V>(g, x, wa, wb, taps, offset, tap, c0, a, b);
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[v] += p[r * g.c + c0 + v] * a[r][v] * b[r][v];
  for (int v = 0; v < V; ++v) o[c0 + v] = acc[v];
}

template <typename T, int R, int V>
inline void backward_block(const Geometry& g, const T* __restrict__ go, const T* __restrict__ x, const T* wa,
                           const T* wb, const T* __restrict__ p, int taps, const int64_t* offset, const int64_t* tap,
                           int64_t c0, T* __restrict__ gx, T* __restrict__ gwa, T* __restrict__ gwb,
                           T* __restrict__ gp) {
  T a[R][V], b[R][V], ga[R][V], gb[R][V];
  factors_block<T, R, V>(g, x, wa, wb, taps, offset, tap, c0, a, b);
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) {
      const T gv = go[c0 + v], pv = p[r * g.c + c0 + v];
      gp[r * g.c + c0 + v] += gv * a[r][v] * b[r][v];
      ga[r][v] = gv * pv * b[r][v];  // dL/da
      gb[r][v] = gv * pv * a[r][v];  // dL/db
    }
  for (int i = 0; i < taps; ++i) {
    const T* __restrict__ xp = x + offset[i] + c0;
    const int64_t w_at = tap[i] * R * g.c + c0;
    T gxv[V] = {};
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < V; ++v) {
        gwa[w_at + r * g.c + v] += ga[r][v] * xp[v];
        gwb[w_at + r * g.c + v] += gb[r][v] * xp[v];
        gxv[v] += ga[r][v] * wa[w_at + r * g.c + v] + gb[r][v] * wb[w_at + r * g.c + v];
      }
    if (gx != nullptr)
      for (int v = 0; v < V; ++v) gx[offset[i] + c0 + v] += gxv[v];
  }
}

// The generic path, for any rank and the channels left over after the blocks of V: accumulators in memory.
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
struct Generic {
  const Geometry& g;
  std::vector<T> buf;
  explicit Generic(const Geometry& g_) : g(g_), buf(4 * g_.rank * kBlock) {}

  void forward(const T* x, const T* wa, const T* wb, const T* p, int taps, const int64_t* offset,
               const int64_t* tap, int64_t c0, int64_t cb, T* __restrict__ o) {
    T* a = buf.data();
    T* b = a + g.rank * kBlock;
    factors(g, x, wa, wb, taps, offset, tap, c0, cb, a, b);
    for (int64_t k = 0; k < cb; ++k) o[c0 + k] = T(0);
    for (int64_t r = 0; r < g.rank; ++r) {
      const T* __restrict__ pr = p + r * g.c + c0;
      const T* __restrict__ ar = a + r * kBlock;
      const T* __restrict__ br = b + r * kBlock;
      for (int64_t k = 0; k < cb; ++k) o[c0 + k] += pr[k] * ar[k] * br[k];
    }
  }

  void backward(const T* __restrict__ go, const T* x, const T* wa, const T* wb, const T* p, int taps,
                const int64_t* offset, const int64_t* tap, int64_t c0, int64_t cb, T* gx, T* gwa, T* gwb, T* gp) {
    T* a = buf.data();
    T* b = a + g.rank * kBlock;
    T* ga = b + g.rank * kBlock;
    T* gb = ga + g.rank * kBlock;
    factors(g, x, wa, wb, taps, offset, tap, c0, cb, a, b);
    for (int64_t r = 0; r < g.rank; ++r) {
      const T* __restrict__ pr = p + r * g.c + c0;
      T* __restrict__ gpr = gp + r * g.c + c0;
      for (int64_t k = 0; k < cb; ++k) {
        const T gv = go[c0 + k];
        gpr[k] += gv * a[r * kBlock + k] * b[r * kBlock + k];
        ga[r * kBlock + k] = gv * pr[k] * b[r * kBlock + k];
        gb[r * kBlock + k] = gv * pr[k] * a[r * kBlock + k];
      }
    }
    for (int i = 0; i < taps; ++i) {
      const T* __restrict__ xp = x + offset[i] + c0;
      T* __restrict__ gxp = gx == nullptr ? nullptr : gx + offset[i] + c0;
      for (int64_t r = 0; r < g.rank; ++r) {
        const int64_t w_at = (tap[i] * g.rank + r) * g.c + c0;
        for (int64_t k = 0; k < cb; ++k) {
          gwa[w_at + k] += ga[r * kBlock + k] * xp[k];
          gwb[w_at + k] += gb[r * kBlock + k] * xp[k];
        }
        if (gxp != nullptr)
          for (int64_t k = 0; k < cb; ++k) gxp[k] += ga[r * kBlock + k] * wa[w_at + k] + gb[r * kBlock + k] * wb[w_at + k];
      }
    }
  }
};

constexpr int kVector = 8;  // channels per register block: one AVX2 register of floats

// Runs body(c0, cb, blocked) over the channel blocks: blocks of kVector for ranks 1-8, the rest generic.
template <typename F>
void channel_blocks(const Geometry& g, F body) {
  int64_t c0 = 0;
  if (g.rank >= 1 && g.rank <= 8)
    for (; c0 + kVector <= g.c; c0 += kVector) body(c0, int64_t(kVector), true);
  for (; c0 < g.c; c0 += kBlock) body(c0, std::min(kBlock, g.c - c0), false);
}

#define DWQ_RANKS(MACRO) MACRO(1) MACRO(2) MACRO(3) MACRO(4) MACRO(5) MACRO(6) MACRO(7) MACRO(8)

template <typename T>
void forward_kernel(const Geometry& g, const T* x, const T* wa, const T* wb, const T* p, T* out) {
  at::parallel_for(0, g.n * g.ho, 1, [&](int64_t begin, int64_t end) {
    Generic<T> generic(g);
    std::vector<int64_t> offset(g.kh * g.kw), tap(g.kh * g.kw);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / g.ho, oh = row % g.ho;
      for (int64_t ow = 0; ow < g.wo; ++ow) {
        const int taps = g.live_taps(n, oh, ow, offset.data(), tap.data());
        T* o = out + ((n * g.ho + oh) * g.wo + ow) * g.c;
        channel_blocks(g, [&](int64_t c0, int64_t cb, bool blocked) {
          if (!blocked) return generic.forward(x, wa, wb, p, taps, offset.data(), tap.data(), c0, cb, o);
          switch (g.rank) {
#define DWQ_FORWARD(R) \
  case R: return forward_block<T, R, kVector>(g, x, wa, wb, p, taps, offset.data(), tap.data(), c0, o);
            DWQ_RANKS(DWQ_FORWARD)
#undef DWQ_FORWARD
          }
        });
      }
    }
  });
}

// Images are split into fixed chunks, each with its own weight-gradient accumulator, summed in chunk order:
// the result does not depend on how the threads were scheduled. Each chunk owns its images' input gradient.
// Within a chunk the channel blocks are the outer loop, so a block's weight gradients stay in L1.
template <typename T>
void backward_kernel(const Geometry& g, const T* grad, const T* x, const T* wa, const T* wb, const T* p,
                     T* gx, T* acc, int64_t chunks) {
  const int64_t per_chunk = (2 * g.kh * g.kw + 1) * g.rank * g.c;
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    Generic<T> generic(g);
    std::vector<int64_t> offset(g.kh * g.kw), tap(g.kh * g.kw);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      T* gwa = acc + chunk * per_chunk;
      T* gwb = gwa + g.kh * g.kw * g.rank * g.c;
      T* gp = gwb + g.kh * g.kw * g.rank * g.c;
      channel_blocks(g, [&](int64_t c0, int64_t cb, bool blocked) {
        for (int64_t n = chunk * g.n / chunks; n < (chunk + 1) * g.n / chunks; ++n) {
          for (int64_t oh = 0; oh < g.ho; ++oh) {
            for (int64_t ow = 0; ow < g.wo; ++ow) {
              const int taps = g.live_taps(n, oh, ow, offset.data(), tap.data());
              const T* go = grad + ((n * g.ho + oh) * g.wo + ow) * g.c;
              if (!blocked) {
                generic.backward(go, x, wa, wb, p, taps, offset.data(), tap.data(), c0, cb, gx, gwa, gwb, gp);
                continue;
              }
              switch (g.rank) {
#define DWQ_BACKWARD(R)                                                                                       \
  case R:                                                                                                     \
    backward_block<T, R, kVector>(g, go, x, wa, wb, p, taps, offset.data(), tap.data(), c0, gx, gwa, gwb, gp); \
    break;
                DWQ_RANKS(DWQ_BACKWARD)
#undef DWQ_BACKWARD
              }
            }
          }
        }
      });
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

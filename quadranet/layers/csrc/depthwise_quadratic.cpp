// The quadratic adapter's term on a depthwise layer, fused, for the CPU:
//
//     out[n, c, o] = sum_r P[r, c] * k(a_r, b_r),  a_r = sum_t A[t, r, c] xa[n, c, o + t],  b_r likewise with B, xb
//
// where t runs over the taps of a (strided, dilated, zero-padded) kernel, and k is the bilinear kernel a * b
// (xa = xb = x: the quadratic term) or the RBF kernel's summand (GELU(a) - GELU(b))^2 (P = 1 / (2 sigma^2): the
// exponent of the rbf / rbf_in kernels, miniHuiHui/InfiNet, InfiNet.py, RBF_kernel; rbf_in passes xa = P_a x,
// xb = P_b x). One pass reads each input pixel's
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
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// k(a, b): weighted(p, a, b) = p k(a, b) for forward; grads(a, b, gv, pv, ga, gb) sets ga = gv pv dk/da,
// gb = gv pv dk/db and returns gv k(a, b), the contribution to dL/dP. (Bilinear keeps the earlier kernel's order
// of operations, so its results are bit-identical to it.)
struct Bilinear {
  template <typename T>
  static inline T weighted(T p, T a, T b) { return p * a * b; }
  template <typename T>
  static inline T grads(T a, T b, T gv, T pv, T& ga, T& gb) {
    ga = gv * pv * b;
    gb = gv * pv * a;
    return gv * a * b;
  }
};

// exp(x) for x <= 0 in float with arithmetic alone (Cephes' expf polynomial, relative error ~1e-7), so that the
// compiler vectorises the loops around it; libm's expf/erff are scalar calls.
inline float exp_neg(float x) {
  x = std::max(x, -87.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// erf(x) in float as a rational function of x (Eigen's generic_fast_erf_float: x P(x^2) / Q(x^2) on [-4, 4], where
// erf is +-1 in float beyond; |error| < 1e-7 in exact arithmetic, 4e-7 evaluated in float), vectorisable.
inline float erf_rational(float x) {
  x = std::min(std::max(x, -4.0f), 4.0f);
  const float x2 = x * x;
  float p = -2.72614225801306e-10f;
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 - 2.10102402082508e-06f;
  p = p * x2 - 5.69250639462346e-05f;
  p = p * x2 - 7.34990630326855e-04f;
  p = p * x2 - 2.95459980854025e-03f;
  p = p * x2 - 1.60960333262415e-02f;
  float q = -1.45660718464996e-05f;
  q = q * x2 - 2.13374055278905e-04f;
  q = q * x2 - 1.68282697438203e-03f;
  q = q * x2 - 7.37332916720468e-03f;
  q = q * x2 - 1.42647390514189e-02f;
  return x * p / q;
}

// GELU(a) = a Phi(a) (exact, erf-based, as torch.nn.GELU) and its derivative Phi(a) + a phi(a).
// double: libm. float: erf_rational and exp_neg (forward needs no exp: the compiler drops the slope there).
inline void gelu(double a, double& value, double& slope) {
  const double cdf = 0.5 * std::erfc(-a * M_SQRT1_2);
  value = a * cdf;
  slope = cdf + a * 0.39894228040143267794 * std::exp(-0.5 * a * a);
}

inline void gelu(float a, float& value, float& slope) {
  const float cdf = 0.5f + 0.5f * erf_rational(a * 0.70710678118654752f);
  value = a * cdf;
  slope = cdf + a * 0.39894228040143268f * exp_neg(-0.5f * a * a);
}

struct Rbf {
  template <typename T>
  static inline T weighted(T p, T a, T b) {
    T ga, sa, gb, sb;
    gelu(a, ga, sa);
    gelu(b, gb, sb);
    return p * (ga - gb) * (ga - gb);
  }
  template <typename T>
  static inline T grads(T a, T b, T gv, T pv, T& da, T& db) {
    T ga, sa, gb, sb;
    gelu(a, ga, sa);
    gelu(b, gb, sb);
    const T d = ga - gb, two_gd = T(2) * gv * pv * d;
    da = two_gd * sa;
    db = -two_gd * sb;
    return gv * d * d;
  }
};

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
// vector registers across the taps (the generic path below keeps them in memory and runs several times slower).
template <typename T, int R, int V>
inline void factors_block(const Geometry& g, const T* __restrict__ xa, const T* __restrict__ xb,
                          const T* __restrict__ wa, const T* __restrict__ wb, int taps, const int64_t* offset,
                          const int64_t* tap, int64_t c0, T (&a)[R][V], T (&b)[R][V]) {
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) a[r][v] = b[r][v] = T(0);
  for (int i = 0; i < taps; ++i) {
    const T* __restrict__ xap = xa + offset[i] + c0;
    const T* __restrict__ xbp = xb + offset[i] + c0;
    const T* __restrict__ ap = wa + tap[i] * R * g.c + c0;
    const T* __restrict__ bp = wb + tap[i] * R * g.c + c0;
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < V; ++v) {
        a[r][v] += ap[r * g.c + v] * xap[v];
        b[r][v] += bp[r * g.c + v] * xbp[v];
      }
  }
}

template <typename K, typename T, int R, int V>
inline void forward_block(const Geometry& g, const T* xa, const T* xb, const T* wa, const T* wb,
                          const T* __restrict__ p, int taps, const int64_t* offset, const int64_t* tap, int64_t c0,
                          T* __restrict__ o) {
  T a[R][V], b[R][V], acc[V] = {};
  factors_block<T, R, V>(g, xa, xb, wa, wb, taps, offset, tap, c0, a, b);
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[v] += K::weighted(p[r * g.c + c0 + v], a[r][v], b[r][v]);
  for (int v = 0; v < V; ++v) o[c0 + v] = acc[v];
}

// gxa, gxb: the input gradients (the same buffer where xa is xb; each thread owns its images, so no race).
template <typename K, typename T, int R, int V>
inline void backward_block(const Geometry& g, const T* __restrict__ go, const T* xa, const T* xb, const T* wa,
                           const T* wb, const T* __restrict__ p, int taps, const int64_t* offset, const int64_t* tap,
                           int64_t c0, T* gxa, T* gxb, T* __restrict__ gwa, T* __restrict__ gwb,
                           T* __restrict__ gp) {
  T a[R][V], b[R][V], ga[R][V], gb[R][V];
  factors_block<T, R, V>(g, xa, xb, wa, wb, taps, offset, tap, c0, a, b);
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) {
      const T gv = go[c0 + v], pv = p[r * g.c + c0 + v];
      gp[r * g.c + c0 + v] += K::grads(a[r][v], b[r][v], gv, pv, ga[r][v], gb[r][v]);  // and dL/da, dL/db
    }
  if (xa == xb) {  // one input: one gradient (the loop of the bilinear-only kernel, so its bits are unchanged)
    for (int i = 0; i < taps; ++i) {
      const T* __restrict__ xp = xa + offset[i] + c0;
      const int64_t w_at = tap[i] * R * g.c + c0;
      T gxv[V] = {};
      for (int r = 0; r < R; ++r)
        for (int v = 0; v < V; ++v) {
          gwa[w_at + r * g.c + v] += ga[r][v] * xp[v];
          gwb[w_at + r * g.c + v] += gb[r][v] * xp[v];
          gxv[v] += ga[r][v] * wa[w_at + r * g.c + v] + gb[r][v] * wb[w_at + r * g.c + v];
        }
      if (gxa != nullptr)
        for (int v = 0; v < V; ++v) gxa[offset[i] + c0 + v] += gxv[v];
    }
    return;
  }
  T* __restrict__ gxa_ = gxa;  // two inputs: two distinct gradient buffers
  T* __restrict__ gxb_ = gxb;
  for (int i = 0; i < taps; ++i) {
    const T* __restrict__ xap = xa + offset[i] + c0;
    const T* __restrict__ xbp = xb + offset[i] + c0;
    const int64_t w_at = tap[i] * R * g.c + c0;
    T gxav[V] = {}, gxbv[V] = {};
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < V; ++v) {
        gwa[w_at + r * g.c + v] += ga[r][v] * xap[v];
        gwb[w_at + r * g.c + v] += gb[r][v] * xbp[v];
        gxav[v] += ga[r][v] * wa[w_at + r * g.c + v];
        gxbv[v] += gb[r][v] * wb[w_at + r * g.c + v];
      }
    if (gxa_ != nullptr)
      for (int v = 0; v < V; ++v) gxa_[offset[i] + c0 + v] += gxav[v];
    if (gxb_ != nullptr)
      for (int v = 0; v < V; ++v) gxb_[offset[i] + c0 + v] += gxbv[v];
  }
}

// The generic path, for any rank and the channels left over after the blocks of V: accumulators in memory.
// a[r][k], b[r][k] = the two factors of rank r at channel c0 + k, over the live taps.
template <typename T>
inline void factors(const Geometry& g, const T* __restrict__ xa, const T* __restrict__ xb, const T* __restrict__ wa,
                    const T* __restrict__ wb, int taps, const int64_t* offset, const int64_t* tap, int64_t c0,
                    int64_t cb, T* __restrict__ a, T* __restrict__ b) {
  std::fill(a, a + g.rank * kBlock, T(0));
  std::fill(b, b + g.rank * kBlock, T(0));
  for (int i = 0; i < taps; ++i) {
    const T* __restrict__ xap = xa + offset[i] + c0;
    const T* __restrict__ xbp = xb + offset[i] + c0;
    for (int64_t r = 0; r < g.rank; ++r) {
      const T* __restrict__ ap = wa + (tap[i] * g.rank + r) * g.c + c0;
      const T* __restrict__ bp = wb + (tap[i] * g.rank + r) * g.c + c0;
      T* __restrict__ ar = a + r * kBlock;
      T* __restrict__ br = b + r * kBlock;
      for (int64_t k = 0; k < cb; ++k) {
        ar[k] += ap[k] * xap[k];
        br[k] += bp[k] * xbp[k];
      }
    }
  }
}

template <typename K, typename T>
struct Generic {
  const Geometry& g;
  std::vector<T> buf;
  explicit Generic(const Geometry& g_) : g(g_), buf(4 * g_.rank * kBlock) {}

  void forward(const T* xa, const T* xb, const T* wa, const T* wb, const T* p, int taps, const int64_t* offset,
               const int64_t* tap, int64_t c0, int64_t cb, T* __restrict__ o) {
    T* a = buf.data();
    T* b = a + g.rank * kBlock;
    factors(g, xa, xb, wa, wb, taps, offset, tap, c0, cb, a, b);
    for (int64_t k = 0; k < cb; ++k) o[c0 + k] = T(0);
    for (int64_t r = 0; r < g.rank; ++r) {
      const T* __restrict__ pr = p + r * g.c + c0;
      const T* __restrict__ ar = a + r * kBlock;
      const T* __restrict__ br = b + r * kBlock;
      for (int64_t k = 0; k < cb; ++k) o[c0 + k] += K::weighted(pr[k], ar[k], br[k]);
    }
  }

  void backward(const T* __restrict__ go, const T* xa, const T* xb, const T* wa, const T* wb, const T* p, int taps,
                const int64_t* offset, const int64_t* tap, int64_t c0, int64_t cb, T* gxa, T* gxb, T* gwa, T* gwb,
                T* gp) {
    T* a = buf.data();
    T* b = a + g.rank * kBlock;
    T* ga = b + g.rank * kBlock;
    T* gb = ga + g.rank * kBlock;
    factors(g, xa, xb, wa, wb, taps, offset, tap, c0, cb, a, b);
    for (int64_t r = 0; r < g.rank; ++r) {
      const T* __restrict__ pr = p + r * g.c + c0;
      T* __restrict__ gpr = gp + r * g.c + c0;
      for (int64_t k = 0; k < cb; ++k)
        gpr[k] += K::grads(a[r * kBlock + k], b[r * kBlock + k], go[c0 + k], pr[k], ga[r * kBlock + k],
                           gb[r * kBlock + k]);
    }
    const bool one_input = xa == xb;
    for (int i = 0; i < taps; ++i) {
      const T* __restrict__ xap = xa + offset[i] + c0;
      const T* __restrict__ xbp = xb + offset[i] + c0;
      T* gxap = gxa == nullptr ? nullptr : gxa + offset[i] + c0;
      T* gxbp = gxb == nullptr ? nullptr : gxb + offset[i] + c0;
      for (int64_t r = 0; r < g.rank; ++r) {
        const int64_t w_at = (tap[i] * g.rank + r) * g.c + c0;
        for (int64_t k = 0; k < cb; ++k) {
          gwa[w_at + k] += ga[r * kBlock + k] * xap[k];
          gwb[w_at + k] += gb[r * kBlock + k] * xbp[k];
        }
        if (one_input) {
          if (gxap != nullptr)
            for (int64_t k = 0; k < cb; ++k)
              gxap[k] += ga[r * kBlock + k] * wa[w_at + k] + gb[r * kBlock + k] * wb[w_at + k];
        } else {
          if (gxap != nullptr)
            for (int64_t k = 0; k < cb; ++k) gxap[k] += ga[r * kBlock + k] * wa[w_at + k];
          if (gxbp != nullptr)
            for (int64_t k = 0; k < cb; ++k) gxbp[k] += gb[r * kBlock + k] * wb[w_at + k];
        }
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

template <typename K, typename T>
void forward_kernel(const Geometry& g, const T* xa, const T* xb, const T* wa, const T* wb, const T* p, T* out) {
  at::parallel_for(0, g.n * g.ho, 1, [&](int64_t begin, int64_t end) {
    Generic<K, T> generic(g);
    std::vector<int64_t> offset(g.kh * g.kw), tap(g.kh * g.kw);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / g.ho, oh = row % g.ho;
      for (int64_t ow = 0; ow < g.wo; ++ow) {
        const int taps = g.live_taps(n, oh, ow, offset.data(), tap.data());
        T* o = out + ((n * g.ho + oh) * g.wo + ow) * g.c;
        channel_blocks(g, [&](int64_t c0, int64_t cb, bool blocked) {
          if (!blocked) return generic.forward(xa, xb, wa, wb, p, taps, offset.data(), tap.data(), c0, cb, o);
          switch (g.rank) {
#define DWQ_FORWARD(R) \
  case R: return forward_block<K, T, R, kVector>(g, xa, xb, wa, wb, p, taps, offset.data(), tap.data(), c0, o);
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
template <typename K, typename T>
void backward_kernel(const Geometry& g, const T* grad, const T* xa, const T* xb, const T* wa, const T* wb,
                     const T* p, T* gxa, T* gxb, T* acc, int64_t chunks) {
  const int64_t per_chunk = (2 * g.kh * g.kw + 1) * g.rank * g.c;
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    Generic<K, T> generic(g);
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
                generic.backward(go, xa, xb, wa, wb, p, taps, offset.data(), tap.data(), c0, cb, gxa, gxb, gwa,
                                 gwb, gp);
                continue;
              }
              switch (g.rank) {
#define DWQ_BACKWARD(R)                                                                                      \
  case R:                                                                                                    \
    backward_block<K, T, R, kVector>(g, go, xa, xb, wa, wb, p, taps, offset.data(), tap.data(), c0, gxa, gxb, \
                                     gwa, gwb, gp);                                                          \
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

enum Kind : int64_t { kBilinear = 0, kRbf = 1 };

at::Tensor forward(const at::Tensor& xa, const at::Tensor& xb, const at::Tensor& wa, const at::Tensor& wb,
                   const at::Tensor& p, int64_t kind, at::IntArrayRef kernel, at::IntArrayRef stride,
                   at::IntArrayRef padding, at::IntArrayRef dilation) {
  const Geometry g = geometry(xa, wa, kernel, stride, padding, dilation);
  TORCH_CHECK(kind == kBilinear || kind == kRbf, "dwk: kind must be 0 (bilinear) or 1 (rbf), got ", kind);
  TORCH_CHECK(xb.sizes() == xa.sizes() && xb.is_contiguous(at::MemoryFormat::ChannelsLast) &&
                  xb.scalar_type() == xa.scalar_type(),
              "dwk: xb must be channels-last contiguous, of xa's shape and dtype");
  check_like(wa, xa, wa.sizes(), "A");
  check_like(wb, xa, wa.sizes(), "B");
  check_like(p, xa, {g.rank, g.c}, "P");
  at::Tensor out = at::empty({g.n, g.c, g.ho, g.wo}, xa.options().memory_format(at::MemoryFormat::ChannelsLast));
  AT_DISPATCH_FLOATING_TYPES(xa.scalar_type(), "dwk_forward", [&] {
    const scalar_t* a_in = xa.data_ptr<scalar_t>();
    const scalar_t* b_in = xb.is_same(xa) ? a_in : xb.data_ptr<scalar_t>();
    if (kind == kBilinear)
      forward_kernel<Bilinear, scalar_t>(g, a_in, b_in, wa.data_ptr<scalar_t>(), wb.data_ptr<scalar_t>(),
                                         p.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
    else
      forward_kernel<Rbf, scalar_t>(g, a_in, b_in, wa.data_ptr<scalar_t>(), wb.data_ptr<scalar_t>(),
                                    p.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
  });
  return out;
}

// Returns (grad xa, grad xb, grad A, grad B, grad P); a grad not asked for is an empty tensor, and where xb is xa
// (the same tensor) grad xa holds the whole input gradient and grad xb is empty.
std::vector<at::Tensor> backward(const at::Tensor& grad, const at::Tensor& xa, const at::Tensor& xb,
                                 const at::Tensor& wa, const at::Tensor& wb, const at::Tensor& p, int64_t kind,
                                 at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
                                 at::IntArrayRef dilation, bool need_xa, bool need_xb) {
  const Geometry g = geometry(xa, wa, kernel, stride, padding, dilation);
  TORCH_CHECK(kind == kBilinear || kind == kRbf, "dwk: kind must be 0 (bilinear) or 1 (rbf), got ", kind);
  TORCH_CHECK(grad.sizes() == at::IntArrayRef({g.n, g.c, g.ho, g.wo}) &&
                  grad.is_contiguous(at::MemoryFormat::ChannelsLast) && grad.scalar_type() == xa.scalar_type(),
              "dwq: grad must be channels-last contiguous, of the output's shape and x's dtype");
  const bool same = xb.is_same(xa);
  if (same) {
    need_xa = need_xa || need_xb;
    need_xb = false;
  }
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(g.n, at::get_num_threads()));
  const int64_t taps_rank_c = g.kh * g.kw * g.rank * g.c;
  at::Tensor acc = at::zeros({chunks, 2 * taps_rank_c + g.rank * g.c}, xa.options());
  at::Tensor gxa = need_xa ? at::zeros_like(xa) : at::Tensor();
  at::Tensor gxb = need_xb ? at::zeros_like(xb) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(xa.scalar_type(), "dwk_backward", [&] {
    const scalar_t* a_in = xa.data_ptr<scalar_t>();
    const scalar_t* b_in = same ? a_in : xb.data_ptr<scalar_t>();
    scalar_t* ga_out = need_xa ? gxa.data_ptr<scalar_t>() : nullptr;
    scalar_t* gb_out = same ? ga_out : (need_xb ? gxb.data_ptr<scalar_t>() : nullptr);
    if (kind == kBilinear)
      backward_kernel<Bilinear, scalar_t>(g, grad.data_ptr<scalar_t>(), a_in, b_in, wa.data_ptr<scalar_t>(),
                                          wb.data_ptr<scalar_t>(), p.data_ptr<scalar_t>(), ga_out, gb_out,
                                          acc.data_ptr<scalar_t>(), chunks);
    else
      backward_kernel<Rbf, scalar_t>(g, grad.data_ptr<scalar_t>(), a_in, b_in, wa.data_ptr<scalar_t>(),
                                     wb.data_ptr<scalar_t>(), p.data_ptr<scalar_t>(), ga_out, gb_out,
                                     acc.data_ptr<scalar_t>(), chunks);
  });
  at::Tensor total = acc.sum(0);
  const at::Tensor empty = at::empty({0}, xa.options());
  return {need_xa ? gxa : empty, need_xb ? gxb : empty, total.slice(0, 0, taps_rank_c).view(wa.sizes()),
          total.slice(0, taps_rank_c, 2 * taps_rank_c).view(wa.sizes()),
          total.slice(0, 2 * taps_rank_c).view({g.rank, g.c})};
}

at::Tensor dwq_forward(const at::Tensor& x, const at::Tensor& wa, const at::Tensor& wb, const at::Tensor& p,
                       at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
                       at::IntArrayRef dilation) {
  return forward(x, x, wa, wb, p, kBilinear, kernel, stride, padding, dilation);
}

// Returns (grad x or an empty tensor, grad A, grad B, grad P).
std::vector<at::Tensor> dwq_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& wa,
                                     const at::Tensor& wb, const at::Tensor& p, at::IntArrayRef kernel,
                                     at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                     bool need_x) {
  std::vector<at::Tensor> out = backward(grad, x, x, wa, wb, p, kBilinear, kernel, stride, padding, dilation,
                                         need_x, false);
  return {out[0], out[2], out[3], out[4]};
}

// The kernel `kind` on two inputs (xa for A, xb for B; pass the same tensor twice for one input).
at::Tensor dwk_forward(const at::Tensor& xa, const at::Tensor& xb, const at::Tensor& wa, const at::Tensor& wb,
                       const at::Tensor& p, int64_t kind, at::IntArrayRef kernel, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation) {
  return forward(xa, xb, wa, wb, p, kind, kernel, stride, padding, dilation);
}

std::vector<at::Tensor> dwk_backward(const at::Tensor& grad, const at::Tensor& xa, const at::Tensor& xb,
                                     const at::Tensor& wa, const at::Tensor& wb, const at::Tensor& p, int64_t kind,
                                     at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
                                     at::IntArrayRef dilation, bool need_xa, bool need_xb) {
  return backward(grad, xa, xb, wa, wb, p, kind, kernel, stride, padding, dilation, need_xa, need_xb);
}


// ---- The rbf kernel's tail: out = P exp(-BN(e)) per channel of the exponent e, as two elementwise passes ----
//
// With z = gamma (e - mean) inv_std + beta (BatchNorm, statistics given), out[c] = p[c] exp(-z) = p exp(a e + b),
// a = -gamma inv_std, b = gamma mean inv_std - beta. Backward, u = dL/dz = -g out: dL/dp = sum g exp(-z),
// dL/dgamma = sum u xhat, dL/dbeta = sum u (xhat = (e - mean) inv_std), and dL/de = gamma inv_std (u - [sum u / M +
// xhat sum u xhat / M]), the bracket in training mode alone (the batch statistics depend on e). e, g, out are
// channels-last, so a pixel's channels are contiguous; reductions run over fixed chunks of pixels summed in order.

// exp(x) in float, |x| <= 87 (Cephes' expf polynomial, relative error ~1e-7) and vectorisable; double: libm.
inline float exp_any(float x) {
  x = std::min(std::max(x, -87.0f), 87.0f);
  const float shifted = x * 1.44269504088896341f + 12582912.0f;  // 1.5 * 2^23: rounds x log2(e) to an integer n
  const float n = shifted - 12582912.0f;
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float q = 1.9875691500e-4f;
  q = q * r + 1.3981999507e-3f;
  q = q * r + 8.3334519073e-3f;
  q = q * r + 4.1665795894e-2f;
  q = q * r + 1.6666665459e-1f;
  q = q * r + 5.0000001201e-1f;
  q = q * r * r + r + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  bits = (bits - 0x4B400000 + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return q * scale;
}

inline double exp_any(double x) { return std::exp(x); }

template <typename T>
void tail_forward(const T* __restrict__ e, const T* __restrict__ p, const T* __restrict__ a,
                  const T* __restrict__ b, T* __restrict__ out, int64_t pixels, int64_t c) {
  at::parallel_for(0, pixels, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T* __restrict__ ei = e + i * c;
      T* __restrict__ oi = out + i * c;
      for (int64_t k = 0; k < c; ++k) oi[k] = p[k] * exp_any(a[k] * ei[k] + b[k]);
    }
  });
}

// acc: chunks x 3C (sum g k, sum u, sum u xhat) per chunk, summed in order by the caller.
template <typename T>
void tail_sums(const T* __restrict__ g, const T* __restrict__ e, const T* __restrict__ p, const T* __restrict__ a,
               const T* __restrict__ b, const T* __restrict__ mean, const T* __restrict__ inv_std, T* acc,
               int64_t pixels, int64_t c, int64_t chunks) {
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      T* __restrict__ s_gk = acc + chunk * 3 * c;
      T* __restrict__ s_u = s_gk + c;
      T* __restrict__ s_ux = s_u + c;
      for (int64_t i = chunk * pixels / chunks; i < (chunk + 1) * pixels / chunks; ++i) {
        const T* __restrict__ gi = g + i * c;
        const T* __restrict__ ei = e + i * c;
        for (int64_t k = 0; k < c; ++k) {
          const T gk = gi[k] * exp_any(a[k] * ei[k] + b[k]);
          const T u = -gk * p[k];
          s_gk[k] += gk;
          s_u[k] += u;
          s_ux[k] += u * (ei[k] - mean[k]) * inv_std[k];
        }
      }
    }
  });
}

// de = gamma inv_std (u - mean_u - xhat mean_ux), with mean_u = mean_ux = 0 in eval mode.
template <typename T>
void tail_input_grad(const T* __restrict__ g, const T* __restrict__ e, const T* __restrict__ p,
                     const T* __restrict__ a, const T* __restrict__ b, const T* __restrict__ mean,
                     const T* __restrict__ inv_std, const T* __restrict__ gamma, const T* __restrict__ mean_u,
                     const T* __restrict__ mean_ux, T* __restrict__ de, int64_t pixels, int64_t c) {
  at::parallel_for(0, pixels, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T* __restrict__ gi = g + i * c;
      const T* __restrict__ ei = e + i * c;
      T* __restrict__ di = de + i * c;
      for (int64_t k = 0; k < c; ++k) {
        const T u = -gi[k] * p[k] * exp_any(a[k] * ei[k] + b[k]);
        const T xhat = (ei[k] - mean[k]) * inv_std[k];
        di[k] = gamma[k] * inv_std[k] * (u - mean_u[k] - xhat * mean_ux[k]);
      }
    }
  });
}

void check_tail(const at::Tensor& e, std::initializer_list<const at::Tensor*> per_channel) {
  TORCH_CHECK(e.dim() == 4 && e.is_contiguous(at::MemoryFormat::ChannelsLast),
              "rbf_tail: e must be a channels-last contiguous 4-d tensor");
  for (const at::Tensor* t : per_channel)
    TORCH_CHECK(t->dim() == 1 && t->size(0) == e.size(1) && t->is_contiguous() && t->scalar_type() == e.scalar_type(),
                "rbf_tail: per-channel tensors must be contiguous, of e's channels and dtype");
}

// Per-channel mean and biased variance of a channels-last e (BatchNorm's batch statistics), accumulated in double
// over fixed chunks of pixels summed in order; returns (var, mean) in e's dtype.
std::vector<at::Tensor> channel_stats(const at::Tensor& e) {
  check_tail(e, {});
  const int64_t c = e.size(1), pixels = e.numel() / std::max<int64_t>(c, 1);
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(pixels, at::get_num_threads()));
  at::Tensor acc = at::zeros({chunks, 2 * c}, e.options().dtype(at::kDouble));
  double* sums = acc.data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES(e.scalar_type(), "channel_stats", [&] {
    const scalar_t* data = e.data_ptr<scalar_t>();
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t chunk = begin; chunk < end; ++chunk) {
        double* __restrict__ s1 = sums + chunk * 2 * c;
        double* __restrict__ s2 = s1 + c;
        for (int64_t i = chunk * pixels / chunks; i < (chunk + 1) * pixels / chunks; ++i) {
          const scalar_t* __restrict__ ei = data + i * c;
          for (int64_t k = 0; k < c; ++k) {
            const double v = ei[k];
            s1[k] += v;
            s2[k] += v * v;
          }
        }
      }
    });
  });
  at::Tensor total = acc.sum(0);
  at::Tensor mean = total.slice(0, 0, c) / double(pixels);
  at::Tensor var = (total.slice(0, c, 2 * c) / double(pixels) - mean * mean).clamp_min(0);
  return {var.to(e.scalar_type()), mean.to(e.scalar_type())};
}

at::Tensor rbf_tail_forward(const at::Tensor& e, const at::Tensor& p, const at::Tensor& a, const at::Tensor& b) {
  check_tail(e, {&p, &a, &b});
  at::Tensor out = at::empty_like(e, e.options().memory_format(at::MemoryFormat::ChannelsLast));
  const int64_t c = e.size(1), pixels = e.numel() / std::max<int64_t>(c, 1);
  AT_DISPATCH_FLOATING_TYPES(e.scalar_type(), "rbf_tail_forward", [&] {
    tail_forward<scalar_t>(e.data_ptr<scalar_t>(), p.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(),
                           b.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), pixels, c);
  });
  return out;
}

// Returns (dL/de, dL/dp, dL/dgamma, dL/dbeta).
std::vector<at::Tensor> rbf_tail_backward(const at::Tensor& grad, const at::Tensor& e, const at::Tensor& p,
                                          const at::Tensor& a, const at::Tensor& b, const at::Tensor& mean,
                                          const at::Tensor& inv_std, const at::Tensor& gamma, bool training) {
  check_tail(e, {&p, &a, &b, &mean, &inv_std, &gamma});
  TORCH_CHECK(grad.sizes() == e.sizes() && grad.is_contiguous(at::MemoryFormat::ChannelsLast) &&
                  grad.scalar_type() == e.scalar_type(),
              "rbf_tail: grad must be channels-last contiguous, of e's shape and dtype");
  const int64_t c = e.size(1), pixels = e.numel() / std::max<int64_t>(c, 1);
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(pixels, at::get_num_threads()));
  at::Tensor acc = at::zeros({chunks, 3 * c}, e.options());
  at::Tensor de = at::empty_like(e, e.options().memory_format(at::MemoryFormat::ChannelsLast));
  at::Tensor sums;
  AT_DISPATCH_FLOATING_TYPES(e.scalar_type(), "rbf_tail_backward", [&] {
    tail_sums<scalar_t>(grad.data_ptr<scalar_t>(), e.data_ptr<scalar_t>(), p.data_ptr<scalar_t>(),
                        a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(),
                        inv_std.data_ptr<scalar_t>(), acc.data_ptr<scalar_t>(), pixels, c, chunks);
    sums = acc.sum(0);
    at::Tensor mean_u = training ? sums.slice(0, c, 2 * c) / pixels : at::zeros({c}, e.options());
    at::Tensor mean_ux = training ? sums.slice(0, 2 * c, 3 * c) / pixels : at::zeros({c}, e.options());
    tail_input_grad<scalar_t>(grad.data_ptr<scalar_t>(), e.data_ptr<scalar_t>(), p.data_ptr<scalar_t>(),
                              a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(),
                              inv_std.data_ptr<scalar_t>(), gamma.data_ptr<scalar_t>(),
                              mean_u.contiguous().data_ptr<scalar_t>(), mean_ux.contiguous().data_ptr<scalar_t>(),
                              de.data_ptr<scalar_t>(), pixels, c);
  });
  return {de, sums.slice(0, 0, c), sums.slice(0, 2 * c, 3 * c), sums.slice(0, c, 2 * c)};
}

}  // namespace

TORCH_LIBRARY(quadranet_cpu, m) {
  m.def("dwq_forward(Tensor x, Tensor wa, Tensor wb, Tensor p, int[] kernel, int[] stride, int[] padding, "
        "int[] dilation) -> Tensor");
  m.def("dwq_backward(Tensor grad, Tensor x, Tensor wa, Tensor wb, Tensor p, int[] kernel, int[] stride, "
        "int[] padding, int[] dilation, bool need_x) -> Tensor[]");
  m.def("dwk_forward(Tensor xa, Tensor xb, Tensor wa, Tensor wb, Tensor p, int kind, int[] kernel, int[] stride, "
        "int[] padding, int[] dilation) -> Tensor");
  m.def("dwk_backward(Tensor grad, Tensor xa, Tensor xb, Tensor wa, Tensor wb, Tensor p, int kind, int[] kernel, "
        "int[] stride, int[] padding, int[] dilation, bool need_xa, bool need_xb) -> Tensor[]");
  m.def("rbf_tail_forward(Tensor e, Tensor p, Tensor a, Tensor b) -> Tensor");
  m.def("channel_stats(Tensor e) -> Tensor[]");
  m.def("rbf_tail_backward(Tensor grad, Tensor e, Tensor p, Tensor a, Tensor b, Tensor mean, Tensor inv_std, "
        "Tensor gamma, bool training) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(quadranet_cpu, CPU, m) {
  m.impl("dwq_forward", &dwq_forward);
  m.impl("dwq_backward", &dwq_backward);
  m.impl("dwk_forward", &dwk_forward);
  m.impl("dwk_backward", &dwk_backward);
  m.impl("rbf_tail_forward", &rbf_tail_forward);
  m.impl("channel_stats", &channel_stats);
  m.impl("rbf_tail_backward", &rbf_tail_backward);
}

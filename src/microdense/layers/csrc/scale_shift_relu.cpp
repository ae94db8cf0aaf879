// One consumer's BN scale, shift and ReLU over the concatenation of features already normalised, in one pass each
// way (microdense/layers/fused.py loads this; microdense/layers/concat_norm.py says why).
//
//   forward:  out = relu(cat(x_0, ..., x_k) * scale + shift)
//   backward: m = grad * (x * scale + shift > 0); grad_shift = sum(m); grad_scale = sum(m * x); grad_x = m * scale
//
// The backward recomputes the ReLU's mask from the features it reads anyway rather than reading the output again.
// Tensors are 4-D, float or double, all channels_last (rows of channels) or all contiguous NCHW (planes of pixels);
// the Python side makes them so. Per-channel sums accumulate in the tensor's own type per thread, as ATen's
// batch-norm backward does, and are added up at the end.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cstring>
#include <vector>

namespace {

// relu with ATen's semantics: NaN stays NaN
template <typename T>
inline T relu(T v) { return v < T(0) ? T(0) : v; }

// g where v > 0, else 0 (threshold_backward's semantics on relu(v): v <= 0 gives 0), written as a bit mask so that
// the compiler vectorises the loop (a branch or a select stops it).
inline float pass_where_positive(float v, float g) {
  uint32_t bits;
  std::memcpy(&bits, &g, sizeof bits);
  bits &= -static_cast<uint32_t>(!(v <= 0.f));
  std::memcpy(&g, &bits, sizeof bits);
  return g;
}

inline double pass_where_positive(double v, double g) {
  uint64_t bits;
  std::memcpy(&bits, &g, sizeof bits);
  bits &= -static_cast<uint64_t>(!(v <= 0.0));
  std::memcpy(&g, &bits, sizeof bits);
  return g;
}

template <typename T>
inline void forward_span(const T* __restrict__ x, const T* __restrict__ scale, const T* __restrict__ shift,
                         T* __restrict__ out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = relu(x[i] * scale[i] + shift[i]);
}

template <typename T>
inline void forward_plane(const T* __restrict__ x, T scale, T shift, T* __restrict__ out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = relu(x[i] * scale + shift);
}

// channels_last: `n` channels of one pixel; per-channel sums in the thread's accumulators
template <typename T>
inline void backward_span(const T* __restrict__ grad, const T* __restrict__ x, const T* __restrict__ scale,
                          const T* __restrict__ shift, T* __restrict__ grad_x, T* __restrict__ sum_m,
                          T* __restrict__ sum_mx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const T m = pass_where_positive(x[i] * scale[i] + shift[i], grad[i]);
    sum_m[i] += m;
    sum_mx[i] += m * x[i];
    grad_x[i] = m * scale[i];
  }
}

// NCHW: the `n` pixels of one channel of one image
template <typename T>
inline void backward_plane(const T* __restrict__ grad, const T* __restrict__ x, T scale, T shift,
                           T* __restrict__ grad_x, T& sum_m, T& sum_mx, int64_t n) {
  T a = 0, b = 0;
  for (int64_t i = 0; i < n; ++i) {
    const T m = pass_where_positive(x[i] * scale + shift, grad[i]);
    a += m;
    b += m * x[i];
    grad_x[i] = m * scale;
  }
  sum_m += a;
  sum_mx += b;
}

bool channels_last(const torch::Tensor& t) {
  return !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

void check(const std::vector<torch::Tensor>& xs, const torch::Tensor& scale) {
  TORCH_CHECK(!xs.empty(), "scale_shift_relu: no features");
  int64_t channels = 0;
  for (const auto& x : xs) {
    TORCH_CHECK(x.dim() == 4 && x.device().is_cpu() && x.scalar_type() == scale.scalar_type(),
                "scale_shift_relu: features must be 4-D CPU tensors of the scale's dtype");
    TORCH_CHECK(x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast),
                "scale_shift_relu: features must be contiguous or channels_last");
    channels += x.size(1);
  }
  TORCH_CHECK(scale.is_contiguous() && scale.numel() == channels, "scale_shift_relu: one scale per channel");
}

}  // namespace

torch::Tensor scale_shift_relu_forward(std::vector<torch::Tensor> xs, torch::Tensor scale, torch::Tensor shift) {
  check(xs, scale);
  const auto& x0 = xs[0];
  const int64_t N = x0.size(0), H = x0.size(2), W = x0.size(3), C = scale.numel(), HW = H * W;
  const bool rows = channels_last(x0);
  auto out = torch::empty({N, C, H, W}, x0.options().memory_format(
      rows ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES(x0.scalar_type(), "scale_shift_relu_forward", [&] {
    std::vector<const scalar_t*> xp;
    std::vector<int64_t> width, offset;
    for (const auto& x : xs) {
      offset.push_back(width.empty() ? 0 : offset.back() + width.back());
      xp.push_back(x.data_ptr<scalar_t>());
      width.push_back(x.size(1));
    }
    const scalar_t* s = scale.data_ptr<scalar_t>();
    const scalar_t* t = shift.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    if (rows) {
      at::parallel_for(0, N * HW, 256, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r)
          for (size_t j = 0; j < xp.size(); ++j)
            forward_span(xp[j] + r * width[j], s + offset[j], t + offset[j], o + r * C + offset[j], width[j]);
      });
    } else {
      at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) {
          const int64_t n = p / C, c = p % C;
          size_t j = 0;
          while (c >= offset[j] + width[j]) ++j;
          forward_plane(xp[j] + (n * width[j] + c - offset[j]) * HW, s[c], t[c], o + p * HW, HW);
        }
      });
    }
  });
  return out;
}

// returns grad_scale, grad_shift, then one gradient per feature
std::vector<torch::Tensor> scale_shift_relu_backward(torch::Tensor grad, std::vector<torch::Tensor> xs,
                                                     torch::Tensor scale, torch::Tensor shift) {
  check(xs, scale);
  const int64_t N = grad.size(0), C = grad.size(1), HW = grad.size(2) * grad.size(3);
  const bool rows = channels_last(xs[0]);
  TORCH_CHECK(grad.dim() == 4 && C == scale.numel() && grad.scalar_type() == scale.scalar_type() &&
              (rows ? grad.is_contiguous(at::MemoryFormat::ChannelsLast) : grad.is_contiguous()),
              "scale_shift_relu: the gradient must have the output's shape, dtype and layout");
  std::vector<torch::Tensor> grad_xs;
  for (const auto& x : xs) grad_xs.push_back(torch::empty_like(x));
  const int64_t chunks = rows ? std::min<int64_t>(at::get_num_threads(), N * HW) : 1;
  auto sums = torch::zeros({chunks, 2, C}, scale.options());  // per chunk: sum(m), sum(m * x)
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "scale_shift_relu_backward", [&] {
    std::vector<const scalar_t*> xp;
    std::vector<scalar_t*> gp;
    std::vector<int64_t> width, offset;
    for (size_t j = 0; j < xs.size(); ++j) {
      offset.push_back(j == 0 ? 0 : offset.back() + width.back());
      xp.push_back(xs[j].data_ptr<scalar_t>());
      gp.push_back(grad_xs[j].data_ptr<scalar_t>());
      width.push_back(xs[j].size(1));
    }
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const scalar_t* s = scale.data_ptr<scalar_t>();
    const scalar_t* t = shift.data_ptr<scalar_t>();
    scalar_t* acc = sums.data_ptr<scalar_t>();
    if (rows) {
      // each chunk of pixels sums into its own accumulators: no two threads write one
      const int64_t per_chunk = (N * HW + chunks - 1) / chunks;
      at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          scalar_t* sum_m = acc + k * 2 * C;
          scalar_t* sum_mx = sum_m + C;
          for (int64_t r = k * per_chunk; r < std::min(N * HW, (k + 1) * per_chunk); ++r)
            for (size_t j = 0; j < xp.size(); ++j)
              backward_span(g + r * C + offset[j], xp[j] + r * width[j], s + offset[j], t + offset[j],
                            gp[j] + r * width[j], sum_m + offset[j], sum_mx + offset[j], width[j]);
        }
      });
    } else {
      // each channel's sums belong to one thread
      at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
        for (int64_t c = begin; c < end; ++c) {
          size_t j = 0;
          while (c >= offset[j] + width[j]) ++j;
          for (int64_t n = 0; n < N; ++n) {
            const int64_t at_x = (n * width[j] + c - offset[j]) * HW;
            backward_plane(g + (n * C + c) * HW, xp[j] + at_x, s[c], t[c], gp[j] + at_x, acc[c], acc[C + c], HW);
          }
        }
      });
    }
  });
  auto total = sums.sum(0);
  std::vector<torch::Tensor> result = {total[1], total[0]};
  result.insert(result.end(), grad_xs.begin(), grad_xs.end());
  return result;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &scale_shift_relu_forward, "relu(cat(xs) * scale + shift)");
  m.def("backward", &scale_shift_relu_backward, "its gradients: scale, shift, then each feature");
}

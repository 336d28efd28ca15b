// The Python module fusedrnn._core: the native kernels over NumPy arrays.
//
// Its callers are fusedrnn.functional (which validates arguments and makes arrays contiguous,
// with messages written for users) and the tests. The checks here are the last line: whatever
// reaches a kernel has the shape, dtype and layout it assumes, so a misuse of _core raises
// instead of reading out of bounds (bind.h). The GIL is released around every kernel.
//
// Each op is one C++ function with the op's Python signature (its py::arg names beside it in
// PYBIND11_MODULE), whose body is generic in the element type and run through with_dtype.
#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "bind.h"
#include "cpu/cpu_caches.h"
#include "cpu/fingerprint.h"
#include "cpu/gemm.h"
#include "cpu/gemm_bf16.h"
#include "cpu/layer.h"
#include "cpu/packed_weights.h"
#include "cpu/math.h"
#include "cpu/openmp_fork.h"
#include "cpu/peak.h"
#include "recurrence.h"

namespace py = pybind11;
using fusedrnn::CellInfo;
using fusedrnn::CellKind;
using fusedrnn::bind::checked;
using fusedrnn::bind::new_array;
using fusedrnn::bind::new_array_if;
using fusedrnn::bind::with_dtype;

namespace {

const int64_t* checked_lengths(const py::object& obj, int64_t B, int64_t T) {
  if (obj.is_none()) return nullptr;
  const int64_t* len = checked<int64_t>(obj, "lengths", {B});
  for (int64_t b = 0; b < B; ++b) {
    if (len[b] < 0 || len[b] > T) {
      throw py::value_error("lengths[" + std::to_string(b) + "] = " + std::to_string(len[b]) +
                            " is outside [0, " + std::to_string(T) + "]");
    }
  }
  return len;
}

template <class T>
const T* checked_scale(const py::object& obj, const T* w_hr, int64_t B, int64_t P) {
  if (obj.is_none()) return nullptr;
  if (w_hr) throw py::value_error("recurrent_scale (recurrent dropout) does not combine with a projection");
  return checked<T>(obj, "recurrent_scale", {B, P});
}

const uint8_t* checked_mask(const py::object& obj, const py::object& lengths, int64_t T, int64_t B) {
  if (obj.is_none()) return nullptr;
  if (!lengths.is_none()) throw py::value_error("give lengths or a mask, not both");
  return checked<uint8_t>(obj, "mask", {T, B});
}

// Sizes read off w_hh (G*H, P) and w_hr (P, H) | None: (H, P).
std::pair<int64_t, int64_t> hidden_and_state_size(CellKind cell, const py::object& w_hh, const py::object& w_hr) {
  if (!py::isinstance<py::array>(w_hh) || py::reinterpret_borrow<py::array>(w_hh).ndim() != 2) {
    throw py::value_error("w_hh must be a 2-d array (G*H, P)");
  }
  const int64_t P = py::reinterpret_borrow<py::array>(w_hh).shape(1);
  if (w_hr.is_none()) return {P, P};
  if (cell != CellKind::kLstm) throw py::value_error("only the LSTM takes a projection w_hr");
  if (!py::isinstance<py::array>(w_hr) || py::reinterpret_borrow<py::array>(w_hr).ndim() != 2) {
    throw py::value_error("w_hr must be a 2-d array (P, H)");
  }
  return {py::reinterpret_borrow<py::array>(w_hr).shape(1), P};
}

// Fills and checks what forward's and backward's arguments share (sizes, x, the weights the
// backward reads again, the masks): Args is ForwardArgs<T> or BackwardArgs<T>.
template <class T, class Args>
void check_shared(Args& a, CellKind cell, const CellInfo& info, const py::array& x, const py::object& w_ih,
                  const py::object& w_hh, const py::object& w_hr, const py::object& recurrent_scale,
                  const py::object& lengths, const py::object& mask, bool repeat_masked_output, bool reverse) {
  if (x.ndim() != 3) throw py::value_error("x must have 3 dimensions (T, B, I)");
  const auto [H, P] = hidden_and_state_size(cell, w_hh, w_hr);
  const int64_t G = info.gates;
  a.T_ = x.shape(0), a.B = x.shape(1), a.I = x.shape(2), a.H = H, a.P = P, a.reverse = reverse;
  a.x = checked<T>(x, "x", {a.T_, a.B, a.I});
  a.w_ih = checked<T>(w_ih, "w_ih", {G * H, a.I});
  a.w_hh = checked<T>(w_hh, "w_hh", {G * H, P});
  a.w_hr = checked<T>(w_hr, "w_hr", {P, H}, true);
  a.recurrent_scale = checked_scale<T>(recurrent_scale, a.w_hr, a.B, P);
  a.lengths = checked_lengths(lengths, a.B, a.T_);
  a.mask = checked_mask(mask, lengths, a.T_, a.B);
  a.repeat_masked_output = repeat_masked_output;
}

// forward(cell, x, h0, c0, w_ih, w_hh, w_hr, b_ih, b_hh, recurrent_scale, lengths, mask,
//         repeat_masked_output, reverse, training, bf16_weights=False, packed=None,
//         bf16_projections=False)
//   -> (y, h_n, c_n | None, saved | None),
//   saved = (gates [T,B,S*H], h [T+1,B,P], c [T+1,B,H] | None, m [T,B,H] | None)
py::tuple forward(const std::string& cell_name, const py::array& x, const py::object& h0, const py::object& c0,
                  const py::object& w_ih, const py::object& w_hh, const py::object& w_hr, const py::object& b_ih,
                  const py::object& b_hh, const py::object& recurrent_scale, const py::object& lengths,
                  const py::object& mask, bool repeat_masked_output, bool reverse, bool training, bool bf16_weights,
                  const py::object& packed, bool bf16_projections) {
  const CellKind cell = fusedrnn::bind::parse_cell(cell_name);
  const CellInfo info = fusedrnn::cell_info(cell);
  return with_dtype("x", x, [&](auto dtype) -> py::tuple {
    using T = typename decltype(dtype)::type;
    if (bf16_weights && (!std::is_same_v<T, float> || training || !w_hr.is_none() || !recurrent_scale.is_none() ||
                         info.two_phase)) {
      throw py::value_error("bfloat16 recurrent weights are for float32 inference only, without a projection, "
                            "recurrent dropout or the reset-before-product GRU");
    }
    if (bf16_projections && !bf16_weights) {
      throw py::value_error("bfloat16 input projections come with bfloat16 recurrent weights: pass bf16_weights too");
    }
    fusedrnn::ForwardArgs<T> a{};
    check_shared<T>(a, cell, info, x, w_ih, w_hh, w_hr, recurrent_scale, lengths, mask, repeat_masked_output,
                    reverse);
    const int64_t steps = a.T_, B = a.B, H = a.H, P = a.P, G = info.gates, S = info.saved;
    const bool has_c = info.has_cell_state;
    a.h0 = checked<T>(h0, "h0", {B, P}, true);
    a.c0 = has_c ? checked<T>(c0, "c0", {B, H}, true) : nullptr;
    a.b_ih = checked<T>(b_ih, "b_ih", {G * H}, true);
    a.b_hh = checked<T>(b_hh, "b_hh", {G * H}, true);
    a.bf16_weights = bf16_weights;
    a.bf16_projections = bf16_projections;
    if (!packed.is_none()) {
      if (!py::isinstance<fusedrnn::cpu::PackedWeights>(packed)) {
        throw py::type_error("packed must be a _core.PackedWeights or None");
      }
      a.packed = packed.cast<fusedrnn::cpu::PackedWeights*>();
    }

    auto y = new_array<T>({steps, B, P});
    auto h_n = new_array<T>({B, P});
    a.y = y.mutable_data();
    a.h_n = h_n.mutable_data();
    py::object c_n = new_array_if<T>(has_c, {B, H}, &a.c_n);
    py::object saved = py::none();
    if (training) {
      auto gates = new_array<T>({steps, B, S * H});
      auto hs = new_array<T>({steps + 1, B, P});
      a.saved_gates = gates.mutable_data();
      a.saved_h = hs.mutable_data();
      py::object cs = new_array_if<T>(has_c, {steps + 1, B, H}, &a.saved_c);
      py::object ms = new_array_if<T>(a.w_hr != nullptr, {steps, B, H}, &a.saved_m);
      saved = py::make_tuple(gates, hs, cs, ms);
    }
    {
      py::gil_scoped_release release;
      fusedrnn::cpu::forward<T>(cell, a);
    }
    return py::make_tuple(y, h_n, c_n, saved);
  });
}

// backward(cell, x, w_ih, w_hh, w_hr, recurrent_scale, lengths, mask, repeat_masked_output,
//          reverse, saved, dy, dh_n, dc_n, want_db_ih, want_db_hh, want_dx)
//   -> (dx | None, dh0, dc0 | None, dw_ih, dw_hh, db_ih | None, db_hh | None, dw_hr | None)
py::tuple backward(const std::string& cell_name, const py::array& x, const py::object& w_ih, const py::object& w_hh,
                   const py::object& w_hr, const py::object& recurrent_scale, const py::object& lengths,
                   const py::object& mask, bool repeat_masked_output, bool reverse, const py::tuple& saved,
                   const py::object& dy, const py::object& dh_n, const py::object& dc_n, bool want_db_ih,
                   bool want_db_hh, bool want_dx) {
  const CellKind cell = fusedrnn::bind::parse_cell(cell_name);
  const CellInfo info = fusedrnn::cell_info(cell);
  return with_dtype("x", x, [&](auto dtype) -> py::tuple {
    using T = typename decltype(dtype)::type;
    if (saved.size() != 4) throw py::value_error("saved must be the 4-tuple that forward returned");
    fusedrnn::BackwardArgs<T> a{};
    check_shared<T>(a, cell, info, x, w_ih, w_hh, w_hr, recurrent_scale, lengths, mask, repeat_masked_output,
                    reverse);
    const int64_t steps = a.T_, B = a.B, I = a.I, H = a.H, P = a.P, G = info.gates, S = info.saved;
    const bool has_c = info.has_cell_state;
    a.saved_gates = checked<T>(saved[0], "saved gates", {steps, B, S * H});
    a.saved_h = checked<T>(saved[1], "saved h", {steps + 1, B, P});
    a.saved_c = has_c ? checked<T>(saved[2], "saved c", {steps + 1, B, H}) : nullptr;
    a.saved_m = a.w_hr ? checked<T>(saved[3], "saved m", {steps, B, H}) : nullptr;
    a.dy = checked<T>(dy, "dy", {steps, B, P}, true);
    a.dh_n = checked<T>(dh_n, "dh_n", {B, P}, true);
    a.dc_n = has_c ? checked<T>(dc_n, "dc_n", {B, H}, true) : nullptr;

    py::object dx = new_array_if<T>(want_dx, {steps, B, I}, &a.dx);
    auto dh0 = new_array<T>({B, P});
    auto dw_ih = new_array<T>({G * H, I});
    auto dw_hh = new_array<T>({G * H, P});
    a.dh0 = dh0.mutable_data();
    a.dw_ih = dw_ih.mutable_data();
    a.dw_hh = dw_hh.mutable_data();
    py::object dc0 = new_array_if<T>(has_c, {B, H}, &a.dc0);
    py::object dw_hr = new_array_if<T>(a.w_hr != nullptr, {P, H}, &a.dw_hr);
    py::object db_ih = new_array_if<T>(want_db_ih, {G * H}, &a.db_ih);
    py::object db_hh = new_array_if<T>(want_db_hh, {G * H}, &a.db_hh);
    {
      py::gil_scoped_release release;
      fusedrnn::cpu::backward<T>(cell, a);
    }
    return py::make_tuple(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr);
  });
}

// C = A @ B through the general (threaded) GEMM, any strides; or C += A @ B into a given C.
template <class T>
py::object gemm_typed(const py::array& a, const py::array& b, const py::object& c_in) {
  const int64_t M = a.shape(0), K = a.shape(1), N = b.shape(1);
  py::array_t<T> c;
  if (c_in.is_none()) {
    c = new_array<T>({M, N});
  } else {
    checked<T>(c_in, "c", {M, N}, false, true);
    c = py::reinterpret_borrow<py::array_t<T>>(c_in);
  }
  // numpy strides are in bytes and may be negative; the kernel takes element strides.
  const T* a_data = static_cast<const T*>(a.data());
  const T* b_data = static_cast<const T*>(b.data());
  const int64_t a_rs = a.strides(0) / int64_t(sizeof(T)), a_cs = a.strides(1) / int64_t(sizeof(T));
  const int64_t b_rs = b.strides(0) / int64_t(sizeof(T)), b_cs = b.strides(1) / int64_t(sizeof(T));
  T* c_data = c.mutable_data();
  const bool accumulate = !c_in.is_none();
  {
    py::gil_scoped_release release;
    fusedrnn::cpu::gemm<T>(M, N, K, a_data, a_rs, a_cs, b_data, b_rs, b_cs, c_data, N, accumulate);
  }
  return c;
}

// The same product through pack_b + gemm_packed_b (the recurrence's path), one thread.
template <class T>
py::object gemm_packed_typed(const py::array& a, const py::array& b) {
  const int64_t M = a.shape(0), K = a.shape(1), N = b.shape(1);
  if (!(a.flags() & py::array::c_style)) throw py::value_error("a must be C-contiguous");
  auto c = new_array<T>({M, N});
  const T* a_data = static_cast<const T*>(a.data());
  const T* b_data = static_cast<const T*>(b.data());
  const int64_t b_rs = b.strides(0) / int64_t(sizeof(T)), b_cs = b.strides(1) / int64_t(sizeof(T));
  T* c_data = c.mutable_data();
  {
    py::gil_scoped_release release;
    std::vector<int64_t> col_offset(N);
    for (int64_t j = 0; j < N; ++j) col_offset[j] = j * b_cs;
    std::vector<T> packed(fusedrnn::cpu::packed_b_size<T>(K, N));
    fusedrnn::cpu::pack_b<T>(K, N, b_data, col_offset.data(), b_rs, packed.data());
    fusedrnn::cpu::gemm_packed_b<T>(M, N, K, a_data, K, packed.data(), c_data, N, false);
  }
  return c;
}

// a @ b with both rounded to bfloat16 and float32 sums, through the bf16 inference mode's kernel
// (the rows of a split among the threads, as the bf16 input projections run).
py::object gemm_bf16(const py::array& a, const py::array& b) {
  const int64_t M = a.shape(0), K = a.shape(1), N = b.shape(1);
  if (!(a.flags() & py::array::c_style)) throw py::value_error("a must be C-contiguous");
  auto c = new_array<float>({M, N});
  const float* a_data = static_cast<const float*>(a.data());
  const float* b_data = static_cast<const float*>(b.data());
  const int64_t b_rs = b.strides(0) / 4, b_cs = b.strides(1) / 4;
  float* c_data = c.mutable_data();
  {
    py::gil_scoped_release release;
    std::vector<int64_t> col_offset(N);
    for (int64_t j = 0; j < N; ++j) col_offset[j] = j * b_cs;
    std::vector<uint16_t> packed(fusedrnn::cpu::packed_bf16_size(K, N));
    fusedrnn::cpu::pack_b_bf16(K, N, b_data, col_offset.data(), b_rs, packed.data());
    fusedrnn::cpu::gemm_bf16_rows(M, N, K, a_data, K, packed.data(), c_data, N);
  }
  return c;
}

void check_matmul(const py::array& a, const py::array& b) {
  if (a.ndim() != 2 || b.ndim() != 2) throw py::value_error("a and b must be 2-d");
  if (a.shape(1) != b.shape(0)) throw py::value_error("a.shape[1] must equal b.shape[0]");
  if (!a.dtype().equal(b.dtype())) throw py::type_error("a and b must have the same dtype");
  const auto item = a.itemsize();
  for (int d = 0; d < 2; ++d) {
    if (a.strides(d) % item || b.strides(d) % item) {
      throw py::value_error("strides must be whole multiples of the element size");
    }
  }
}

// The cells' float32 exp / sigmoid / tanh over an array, as the kernels compute them with the
// current instruction set (for the accuracy tests).
py::array_t<float> vector_math(const std::string& name, const py::array_t<float, py::array::c_style | py::array::forcecast>& x) {
  if (name != "exp" && name != "sigmoid" && name != "tanh") throw py::value_error("unknown function " + name);
  auto out = py::array_t<float>(x.size());
  const float* in = x.data();
  float* o = out.mutable_data();
  const int64_t size = x.size();
  const int which = name == "exp" ? 0 : name == "sigmoid" ? 1 : 2;
  fusedrnn::cpu::run_for_isa(fusedrnn::cpu::current_isa(), [&](auto bytes) FUSEDRNN_INLINE_LAMBDA {
    using V = fusedrnn::cpu::Vec<float, decltype(bytes)::value>;
    for (int64_t i = 0; i < size; i += V::kLanes) {
      const int64_t n = std::min<int64_t>(V::kLanes, size - i);
      const V v = V::load(in + i, n);
      const V r = which == 0 ? fusedrnn::cpu::exp_(v) : which == 1 ? fusedrnn::cpu::sigmoid(v) : fusedrnn::cpu::tanh_(v);
      r.store(o + i, n);
    }
  });
  return out;
}

int openmp_max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

void openmp_set_threads(int threads) {
  if (threads < 1) throw py::value_error("the thread count must be at least 1, got " + std::to_string(threads));
#ifdef _OPENMP
  omp_set_num_threads(threads);
#endif
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "fusedrnn native kernels (see fusedrnn.functional for the documented API)";
  m.attr("__version__") = FUSEDRNN_VERSION;
  fusedrnn::cpu::release_openmp_threads_before_fork();

  m.def("forward", &forward, py::arg("cell"), py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("w_hr"), py::arg("b_ih"), py::arg("b_hh"), py::arg("recurrent_scale"),
        py::arg("lengths"), py::arg("mask"), py::arg("repeat_masked_output"), py::arg("reverse"), py::arg("training"),
        py::arg("bf16_weights") = false, py::arg("packed") = py::none(), py::arg("bf16_projections") = false);
  py::class_<fusedrnn::cpu::PackedWeights>(
      m, "PackedWeights",
      "Packed copies of one layer direction's weights kept across forward calls (fusedrnn.functional.PackedWeights "
      "decides when they are stale and clears them).")
      .def(py::init<>())
      .def("clear", &fusedrnn::cpu::PackedWeights::clear, py::call_guard<py::gil_scoped_release>(),
           "Forget (and free) every packed matrix: the weights changed.")
      .def_property_readonly("nbytes", &fusedrnn::cpu::PackedWeights::bytes, "Bytes of packed weights held.")
      .def_property_readonly("packs", &fusedrnn::cpu::PackedWeights::packs,
                             "How many matrices forwards have packed into it (a call that found them ready adds 0).")
      .def_property_readonly("hits", &fusedrnn::cpu::PackedWeights::hits,
                             "Forwards that found the packed copies current (same weights, layout and addresses).")
      .def_property_readonly("misses", &fusedrnn::cpu::PackedWeights::misses,
                             "Forwards that packed afresh (the first, or one after a change or clear()).");
  m.def("backward", &backward, py::arg("cell"), py::arg("x"), py::arg("w_ih"), py::arg("w_hh"), py::arg("w_hr"),
        py::arg("recurrent_scale"), py::arg("lengths"), py::arg("mask"), py::arg("repeat_masked_output"),
        py::arg("reverse"), py::arg("saved"), py::arg("dy"), py::arg("dh_n"), py::arg("dc_n"), py::arg("want_db_ih"),
        py::arg("want_db_hh"), py::arg("want_dx") = true);
  fusedrnn::bind::def_cells(m);
  fusedrnn::bind::def_array_cache(m);

  m.def(
      "gemm",
      [](const py::array& a, const py::array& b, const py::object& c) {
        check_matmul(a, b);
        return with_dtype("x", a, [&](auto dtype) { return gemm_typed<typename decltype(dtype)::type>(a, b, c); });
      },
      py::arg("a"), py::arg("b"), py::arg("c") = py::none(),
      "a @ b through fusedrnn's own GEMM (any strides); with c, c += a @ b in place.");
  m.def(
      "gemm_packed",
      [](const py::array& a, const py::array& b) {
        check_matmul(a, b);
        return with_dtype("x", a, [&](auto dtype) { return gemm_packed_typed<typename decltype(dtype)::type>(a, b); });
      },
      py::arg("a"), py::arg("b"), "a @ b through the packed single-thread path of the recurrence.");

  m.def(
      "gemm_bf16",
      [](const py::array& a, const py::array& b) {
        check_matmul(a, b);
        return with_dtype("x", a, [&](auto dtype) -> py::object {
          if constexpr (std::is_same_v<typename decltype(dtype)::type, float>) {
            return gemm_bf16(a, b);
          } else {
            throw py::type_error("gemm_bf16 takes float32 arrays");
          }
        });
      },
      py::arg("a"), py::arg("b"), "a @ b rounded to bfloat16, float32 sums: the bf16 inference mode's kernel.");
  m.def(
      "_gemm_bf16_with",
      [](const std::string& kernel, const py::array& a, const py::array& b) -> py::object {
        check_matmul(a, b);
        if (!a.dtype().equal(py::dtype::of<float>())) throw py::type_error("_gemm_bf16_with takes float32 arrays");
        if (!(a.flags() & py::array::c_style)) throw py::value_error("a must be C-contiguous");
        const int64_t M = a.shape(0), K = a.shape(1), N = b.shape(1);
        auto c = new_array<float>({M, N});
        std::vector<int64_t> col_offset(N);
        for (int64_t j = 0; j < N; ++j) col_offset[j] = j * (b.strides(1) / 4);
        std::vector<uint16_t> packed(fusedrnn::cpu::packed_bf16_size(K, N));
        std::vector<uint32_t> pairs(M * ((K + 1) / 2));
        fusedrnn::cpu::pack_b_bf16(K, N, static_cast<const float*>(b.data()), col_offset.data(), b.strides(0) / 4,
                                   packed.data());
        fusedrnn::cpu::pack_a_bf16(M, K, static_cast<const float*>(a.data()), K, pairs.data());
        if (!fusedrnn::cpu::gemm_bf16_with(kernel.c_str(), M, N, K, pairs.data(), packed.data(), c.mutable_data(), N)) {
          return py::none();
        }
        return c;
      },
      py::arg("kernel"), py::arg("a"), py::arg("b"),
      "gemm_bf16 through one named kernel (portable, avx2, avx512, avx512bf16); None where unavailable. For tests.");
  m.def("bf16_kernel", &fusedrnn::cpu::bf16_kernel,
        "The bf16 inference mode's kernel now: avx512bf16, avx512 or avx2 (widening in registers), or portable.");
  m.def("bf16_native", &fusedrnn::cpu::bf16_native,
        "Whether the bf16 inference mode runs on AVX512-BF16 here (else a portable loop, same results).");
  m.def(
      "cache_sizes",
      [] {
        const auto& c = fusedrnn::cpu::cache_sizes();
        py::dict d;
        d["l1d"] = c.l1d, d["l2"] = c.l2, d["l3_per_core"] = c.l3, d["source"] = c.source;
        return d;
      },
      "The data caches the kernels plan for, in bytes per core, and where the sizes came from.");
  m.def(
      "_set_cache_sizes",
      [](int64_t l1d, int64_t l2, int64_t l3) { fusedrnn::cpu::set_cache_sizes(l1d, l2, l3); },
      py::arg("l1d"), py::arg("l2"), py::arg("l3"),
      "Plan for these cache sizes instead of the detected ones (0, 0, 0 restores them). For tests.");
  m.def(
      "_set_team_split",
      [](const std::string& split) {
        using fusedrnn::cpu::TeamSplit;
        const TeamSplit setting = split == "rule"    ? TeamSplit::kRule
                                  : split == "units" ? TeamSplit::kUnits
                                  : split == "rows"  ? TeamSplit::kRows
                                                     : throw py::value_error("split must be 'rule', 'units' or 'rows'");
        fusedrnn::cpu::team_split_setting().store(static_cast<int>(setting));
      },
      py::arg("split"),
      "How the CPU teams split a step's work: 'rule' (the default: by batch rows for layers whose "
      "recurrent weights fit in L2, else by units), or always 'units' or 'rows'. For tests.");
  m.def(
      "_forward_team",
      [](const std::string& cell, int64_t batch, int64_t hidden) {
        return fusedrnn::cpu::forward_team(fusedrnn::bind::parse_cell(cell), batch, hidden);
      },
      py::arg("cell"), py::arg("batch"), py::arg("hidden"),
      "(threads, splits the batch) of forward's team for a float32 layer of this size. For tests.");
  m.def("cpu_vendor", &fusedrnn::cpu::cpu_vendor, "The CPU's vendor string (cpuid), e.g. GenuineIntel.");
  m.def(
      "gemm_blocking",
      [](const std::string& dtype) {
        fusedrnn::cpu::GemmBlocking b{};
        if (dtype == "float32") {
          b = fusedrnn::cpu::gemm_blocking<float>();
        } else if (dtype == "float64") {
          b = fusedrnn::cpu::gemm_blocking<double>();
        } else {
          throw py::value_error("dtype must be 'float32' or 'float64'");
        }
        py::dict d;
        d["kc"] = b.kc, d["mc"] = b.mc, d["nc"] = b.nc, d["tile_rows"] = b.rows, d["tile_panels"] = b.panels;
        return d;
      },
      py::arg("dtype") = "float32", "The GEMM's block sizes and micro-kernel tile now (ISA and caches).");
  m.def("isa_compiled", &fusedrnn::cpu::isa_compiled);
  m.def("isa_selected", &fusedrnn::cpu::isa_selected);
  m.def("set_isa", [](const std::string& name) { return fusedrnn::cpu::set_isa(name.c_str()); },
        py::arg("name"), "Force a GEMM kernel set (avx512, avx2, portable); False if unavailable.");
  m.def("_vector_math", &vector_math, py::arg("name"), py::arg("x"),
        "The kernels' float32 exp, sigmoid or tanh of a 1-d array (for testing their accuracy).");
  m.def(
      "fma_peak_gflops",
      [](int threads, int64_t iterations) {
        if (threads < 1 || iterations < 1) throw py::value_error("threads and iterations must be >= 1");
        py::gil_scoped_release release;
        return fusedrnn::cpu::fma_peak_gflops(threads, iterations);
      },
      py::arg("threads"), py::arg("iterations") = 20000000,
      "Measured float32 multiply-add peak in GFLOP/s with this many threads (the benchmarks' yardstick).");
  m.def(
      "read_bandwidth_gbs",
      [](int64_t bytes, int threads, int passes) {
        if (bytes < 256) throw py::value_error("bytes must be >= 256");
        if (threads < 1 || passes < 1) throw py::value_error("threads and passes must be >= 1");
        py::gil_scoped_release release;
        return fusedrnn::cpu::read_bandwidth_gbs(threads, bytes, passes);
      },
      py::arg("bytes"), py::arg("threads"), py::arg("passes") = 20,
      "Measured rate in GB/s at which this many threads read `bytes` of float32, each its own share (the "
      "benchmarks' bound for steps that read their weights once).");
  m.def(
      "cross_core_latency_ns",
      [](int64_t rounds) {
        if (rounds < 1) throw py::value_error("rounds must be >= 1");
        py::gil_scoped_release release;
        return fusedrnn::cpu::cross_core_latency_ns(rounds);
      },
      py::arg("rounds") = 5000,
      "Measured one-way latency in ns between the first two threads of a team of two (a round trip's "
      "half): how far apart the process's cores are now. NaN if the team gets one thread.");
  m.def(
      "fingerprint",
      [](const py::array& a) {
        if (!(a.flags() & py::array::c_style)) throw py::value_error("fingerprint needs a C-contiguous array");
        const void* data = a.data();
        const int64_t bytes = a.nbytes();
        py::gil_scoped_release release;
        return fusedrnn::cpu::fingerprint(data, bytes);
      },
      py::arg("a"),
      "A 64-bit digest of a C-contiguous array's bytes: an in-place change between a forward and its backward "
      "changes it.");
  m.def("one_step_in_place", &fusedrnn::cpu::one_step_in_place, py::arg("steps"), py::arg("batch"), py::arg("bf16"),
        py::arg("projected"), py::arg("two_phase"),
        "Whether forward reads the weights in place, so that a PackedWeights given to it goes unused.");
  m.def("max_threads", &openmp_max_threads);
  m.def("set_max_threads", &openmp_set_threads, py::arg("threads"));
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
  m.attr("compiler") = FUSEDRNN_COMPILER;
}

// The cell table for Python (_core.cell_info), and a host test of the cells' scalar code.
//
// _cell_step_forward / _cell_step_backward run one step of a cell (cells/*.h) on N independent
// hidden units, one after another, with T = float or double: the same functions a GPU backend
// calls, instantiated on plain scalars with cells/math.h's activations, so tests can hold them
// to the NumPy reference. The CPU kernels run the cells on vectors instead. This file includes
// nothing from cpu/: the cells must not need it.
#include <cstdint>
#include <string>

#include "bind.h"
#include "recurrence.h"

namespace fusedrnn::bind {
namespace {

// {name: {"gates", "saved", "has_cell_state", "two_phase", "split_gradient"}} in the table's order.
py::dict cell_table() {
  py::dict table;
  for (const CellKind kind : kCellKinds) {
    const CellInfo info = cell_info(kind);
    py::dict row;
    row["gates"] = info.gates;
    row["saved"] = info.saved;
    row["has_cell_state"] = info.has_cell_state;
    row["two_phase"] = info.two_phase;
    row["split_gradient"] = info.split_gradient;
    table[py::str(info.name)] = row;
  }
  return table;
}

// A two-phase cell's last gate multiplies r*h by W_hn, which mixes units; in these tests each
// unit stands alone, so W_hn is the identity: hn = r*h + hg[G-1] (hg[G-1] playing b_hn), and the
// gradient reaching r*h is da_n.
template <class Cell, class T>
void step_forward(int64_t n, const T* xg, const T* hg, const T* h, const T* c, T* h_new, T* c_new, T* saved) {
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  for (int64_t i = 0; i < n; ++i) {
    const State<T> prev{h[i], c ? c[i] : T(0)};
    State<T> next{T(0), T(0)};
    T unit_saved[S > 0 ? S : 1];
    if constexpr (Cell::kTwoPhase) {
      T rz[2], rh;
      Cell::reset(xg + i * G, hg + i * G, prev, rz, rh);
      Cell::output(xg[i * G + G - 1], rh + hg[i * G + G - 1], rz, rh, prev, next, unit_saved);
    } else {
      Cell::forward(xg + i * G, hg + i * G, prev, next, unit_saved);
    }
    h_new[i] = next.h;
    if (c_new) c_new[i] = next.c;
    for (int k = 0; k < S; ++k) saved[i * S + k] = unit_saved[k];
  }
}

template <class Cell, class T>
void step_backward(int64_t n, const T* saved, const T* h, const T* c, const T* h_new, const T* c_new,
                   const T* dh_new, const T* dc_new, T* dgx, T* dgh, T* dh, T* dc) {
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  for (int64_t i = 0; i < n; ++i) {
    const State<T> prev{h[i], c ? c[i] : T(0)};
    const State<T> next{h_new[i], c_new ? c_new[i] : T(0)};
    const State<T> d_next{dh_new[i], dc_new ? dc_new[i] : T(0)};
    State<T> d_prev{T(0), T(0)};
    T gx[G], gh[G];
    if constexpr (Cell::kTwoPhase) {
      Cell::output_backward(saved + i * S, prev, d_next, gx, d_prev);
      Cell::reset_backward(saved + i * S, prev, gx[G - 1], gx, d_prev);
      for (int g = 0; g < G; ++g) gh[g] = gx[g];
    } else {
      Cell::backward(saved + i * S, prev, next, d_next, gx, gh, d_prev);
    }
    for (int g = 0; g < G; ++g) {
      dgx[i * G + g] = gx[g];
      dgh[i * G + g] = gh[g];
    }
    dh[i] = d_prev.h;
    if (dc) dc[i] = d_prev.c;
  }
}

// _cell_step_forward(cell, xg, hg, h, c=None) -> (h_new, c_new | None, saved)
//   xg, hg: [N, G] W_ih x + b_ih and W_hh h + b_hh of N units; h, c: [N] (c: cells with c only);
//   saved: [N, S], the cell's saved values.
py::tuple cell_step_forward(const std::string& cell_name, const py::object& xg, const py::object& hg,
                            const py::array& h, const py::object& c) {
  const CellKind cell = parse_cell(cell_name);
  const CellInfo info = cell_info(cell);
  if (!info.has_cell_state && !c.is_none()) throw py::value_error(cell_name + " has no cell state c");
  return with_dtype("h", h, [&](auto dtype) -> py::tuple {
    using T = typename decltype(dtype)::type;
    const int64_t n = h.ndim() == 1 ? h.shape(0) : -1, G = info.gates, S = info.saved;
    const T* h_data = checked<T>(h, "h", {n});
    const T* xg_data = checked<T>(xg, "xg", {n, G});
    const T* hg_data = checked<T>(hg, "hg", {n, G});
    const T* c_data = info.has_cell_state ? checked<T>(c, "c", {n}) : nullptr;
    auto h_new = new_array<T>({n});
    auto saved = new_array<T>({n, S});
    T* c_new_data = nullptr;
    py::object c_new = new_array_if<T>(info.has_cell_state, {n}, &c_new_data);
    T* h_new_data = h_new.mutable_data();
    T* saved_data = saved.mutable_data();
    {
      py::gil_scoped_release release;
      with_cell(cell, [&](auto cell_type) {
        step_forward<decltype(cell_type), T>(n, xg_data, hg_data, h_data, c_data, h_new_data, c_new_data,
                                             saved_data);
      });
    }
    return py::make_tuple(h_new, c_new, saved);
  });
}

// _cell_step_backward(cell, saved, h, h_new, dh_new, c=None, c_new=None, dc_new=None)
//   -> (dgx, dgh, dh, dc | None)
//   saved: [N, S] from _cell_step_forward; h, c: the states before the step, h_new, c_new after
//   it, dh_new, dc_new: the gradients reaching them, all [N] (c's: cells with c only).
//   dgx, dgh: [N, G] gradients of xg and hg; dh, dc: [N] the previous state's gradient besides
//   what flows through W_hh.
py::tuple cell_step_backward(const std::string& cell_name, const py::object& saved, const py::array& h,
                             const py::object& h_new, const py::object& dh_new, const py::object& c,
                             const py::object& c_new, const py::object& dc_new) {
  const CellKind cell = parse_cell(cell_name);
  const CellInfo info = cell_info(cell);
  if (!info.has_cell_state && !(c.is_none() && c_new.is_none() && dc_new.is_none())) {
    throw py::value_error(cell_name + " has no cell state c");
  }
  return with_dtype("h", h, [&](auto dtype) -> py::tuple {
    using T = typename decltype(dtype)::type;
    const int64_t n = h.ndim() == 1 ? h.shape(0) : -1, G = info.gates, S = info.saved;
    const bool has_c = info.has_cell_state;
    const T* h_data = checked<T>(h, "h", {n});
    const T* saved_data = checked<T>(saved, "saved", {n, S});
    const T* h_new_data = checked<T>(h_new, "h_new", {n});
    const T* dh_new_data = checked<T>(dh_new, "dh_new", {n});
    const T* c_data = has_c ? checked<T>(c, "c", {n}) : nullptr;
    const T* c_new_data = has_c ? checked<T>(c_new, "c_new", {n}) : nullptr;
    const T* dc_new_data = has_c ? checked<T>(dc_new, "dc_new", {n}) : nullptr;
    auto dgx = new_array<T>({n, G});
    auto dgh = new_array<T>({n, G});
    auto dh = new_array<T>({n});
    T* dc_data = nullptr;
    py::object dc = new_array_if<T>(has_c, {n}, &dc_data);
    T* dgx_data = dgx.mutable_data();
    T* dgh_data = dgh.mutable_data();
    T* dh_data = dh.mutable_data();
    {
      py::gil_scoped_release release;
      with_cell(cell, [&](auto cell_type) {
        step_backward<decltype(cell_type), T>(n, saved_data, h_data, c_data, h_new_data, c_new_data, dh_new_data,
                                              dc_new_data, dgx_data, dgh_data, dh_data, dc_data);
      });
    }
    return py::make_tuple(dgx, dgh, dh, dc);
  });
}

}  // namespace

void def_cells(py::module_& m) {
  m.def("cell_info", &cell_table,
        "The cell table: {name: {gates, saved, has_cell_state, two_phase, split_gradient}}, in the kernels' order.");
  m.def("_cell_step_forward", &cell_step_forward, py::arg("cell"), py::arg("xg"), py::arg("hg"), py::arg("h"),
        py::arg("c") = py::none(),
        "One step of a cell's scalar code on N independent units: (h_new, c_new | None, saved). For tests.");
  m.def("_cell_step_backward", &cell_step_backward, py::arg("cell"), py::arg("saved"), py::arg("h"),
        py::arg("h_new"), py::arg("dh_new"), py::arg("c") = py::none(), py::arg("c_new") = py::none(),
        py::arg("dc_new") = py::none(),
        "The backward of _cell_step_forward: (dgx, dgh, dh, dc | None). For tests.");
}

}  // namespace fusedrnn::bind

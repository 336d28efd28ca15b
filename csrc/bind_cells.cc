// The cell table for Python: _core.cell_info().
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

}  // namespace

void def_cells(py::module_& m) {
  m.def("cell_info", &cell_table,
        "The cell table: {name: {gates, saved, has_cell_state, two_phase, split_gradient}}, in the kernels' order.");
}

}  // namespace fusedrnn::bind

// fusedrnn._cuda's switch between cuBLAS and fusedrnn's own GEMM kernel (cuda/cublas.h), and what
// build_info says about it. fusedrnn.cuda.set_gemm() validates names; these are the last line.
#include <cstdint>
#include <string>
#include <vector>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cuda/cublas.h"

namespace py = pybind11;
namespace cublas = fusedrnn::cuda::cublas;

namespace fusedrnn::bind_cuda {

// Which GEMM runs, in words, and the facts behind it (for build_info()["gemm"]).
py::dict gemm_info() {
  const cublas::Info loaded = cublas::info();
  const cublas::Mode mode = cublas::mode();
  const std::string own = "fusedrnn's tiled kernel";
  const std::string min_work = std::to_string(cublas::min_work());
  std::string runs;
  if (mode == cublas::Mode::kOwn) {
    runs = own + " for every product (set_gemm('fusedrnn'))";
  } else if (!loaded.loaded) {
    runs = own + " for every product: cuBLAS is not loaded (" + loaded.why_not + ")";
  } else if (mode == cublas::Mode::kCublas) {
    runs = "cuBLAS " + loaded.version + " for every product whose operands have a unit stride (set_gemm('cublas')), " +
           own + " for the rest";
  } else {
    runs = "cuBLAS " + loaded.version + " for products of at least " + min_work +
           " multiply-adds whose operands have a unit stride, " + own + " for the rest";
  }
  py::dict info;
  info["mode"] = mode == cublas::Mode::kAuto ? "auto" : mode == cublas::Mode::kCublas ? "cublas" : "fusedrnn";
  info["runs"] = runs;
  info["cublas_version"] = loaded.loaded ? py::object(py::str(loaded.version)) : py::none();
  info["cublas_library"] = loaded.loaded ? py::object(py::str(loaded.library)) : py::none();
  info["cublas_unavailable"] = loaded.loaded ? py::none() : py::object(py::str(loaded.why_not));
  info["cublas_min_work"] = cublas::min_work();
  return info;
}

void bind_gemm_switch(py::module_& m) {
  m.def(
      "set_gemm",
      [](const std::string& name) {
        if (name == "auto") {
          cublas::set_mode(cublas::Mode::kAuto);
        } else if (name == "fusedrnn") {
          cublas::set_mode(cublas::Mode::kOwn);
        } else if (name == "cublas") {
          py::gil_scoped_release release;  // loading the library takes a while
          cublas::set_mode(cublas::Mode::kCublas);
        } else {
          throw py::value_error("gemm must be 'auto', 'cublas' or 'fusedrnn', got '" + name + "'");
        }
      },
      py::arg("name"), "Which GEMM the backend's products run in (fusedrnn.cuda.set_gemm).");
  m.def("set_cublas_search_dirs", &cublas::set_search_dirs, py::arg("dirs"),
        "Directories to look for the cuBLAS library in after the loader's own search.");
  m.def("cublas_library_name", &cublas::library_name, "The cuBLAS library this build loads (libcublas.so.N).");
  m.def("set_cublas_min_work", &cublas::set_min_work, py::arg("multiply_adds"),
        "The smallest product (M*N*K) that set_gemm('auto') sends to cuBLAS (tests lower it).");
  m.def("cublas_min_work", &cublas::min_work);
  m.def(
      "cublas_form",
      [](int64_t M, int64_t N, int64_t K, int64_t a_rs, int64_t a_cs, int64_t b_rs, int64_t b_cs,
         int64_t ldc) -> py::object {
        const cublas::Form f = cublas::form(M, N, K, a_rs, a_cs, b_rs, b_cs, ldc);
        if (!f.ok) return py::none();
        py::dict d;
        d["transa"] = f.transpose_first ? "T" : "N";
        d["transb"] = f.transpose_second ? "T" : "N";
        d["m"] = f.m, d["n"] = f.n, d["k"] = f.k;
        d["lda"] = f.ld_first, d["ldb"] = f.ld_second, d["ldc"] = f.ldc;
        return d;
      },
      py::arg("m"), py::arg("n"), py::arg("k"), py::arg("a_rs"), py::arg("a_cs"), py::arg("b_rs"), py::arg("b_cs"),
      py::arg("ldc"),
      "The cuBLAS gemm arguments (column-major, its A from our B) of the row-major product C = A B at these "
      "element strides, or None where cuBLAS cannot address them.");
  m.def(
      "gemm_route",
      [](int64_t M, int64_t N, int64_t K, int64_t a_rs, int64_t a_cs, int64_t b_rs, int64_t b_cs, int64_t ldc) {
        std::string why;
        bool to_cublas = false;
        {
          py::gil_scoped_release release;
          to_cublas = cublas::route(M, N, K, a_rs, a_cs, b_rs, b_cs, ldc, &why);
        }
        return py::make_tuple(to_cublas ? "cublas" : "fusedrnn", why);
      },
      py::arg("m"), py::arg("n"), py::arg("k"), py::arg("a_rs"), py::arg("a_cs"), py::arg("b_rs"), py::arg("b_cs"),
      py::arg("ldc"), "Which GEMM a product of these sizes and strides runs in now, and why.");
}

}  // namespace fusedrnn::bind_cuda

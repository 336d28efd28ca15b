# The CUDA backend: the kernels of csrc/cuda/ in a static library compiled by nvcc, and the
# extension module fusedrnn._cuda (csrc/bind_cuda.cc, compiled by the host compiler) over it.
#
# Architectures: CMAKE_CUDA_ARCHITECTURES (or the CUDAARCHS environment variable), else what
# nvcc targets by default (CMake asks the compiler). With FUSEDRNN_CUDA_EMULATOR the module links
# that library instead of the CUDA runtime; the emulator compiles the PTX embedded in the build.
#
# cuBLAS is not a build dependency: csrc/cuda/cublas.cc loads it at run time (dlopen) where it is
# installed, and an emulated build (FUSEDRNN_CUDA_EMULATED) never does.

if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT DEFINED ENV{CUDAARCHS} AND FUSEDRNN_CUDA_EMULATOR)
  # The emulator reads PTX of compute_75 up to compute_120; nvcc's default may lie outside it.
  set(CMAKE_CUDA_ARCHITECTURES 80)
endif()
enable_language(CUDA)
# nvcc from NVIDIA's PyPI wheels (nvidia-cuda-nvcc, -runtime, -crt, -cccl and nvidia-nvvm, which
# share one nvidia/cu<N> folder; CUDACXX names their nvcc) comes with only the versioned
# libcudart.so.<N>, which FindCUDAToolkit does not look for: point it there. (The module links the
# static runtime; this only lets the toolkit be found.)
get_filename_component(FUSEDRNN_CUDA_ROOT "${CMAKE_CUDA_COMPILER}" DIRECTORY)
get_filename_component(FUSEDRNN_CUDA_ROOT "${FUSEDRNN_CUDA_ROOT}" DIRECTORY)
file(GLOB FUSEDRNN_VERSIONED_CUDART "${FUSEDRNN_CUDA_ROOT}/lib/libcudart.so.[0-9]*")
if(NOT DEFINED CUDA_CUDART AND FUSEDRNN_VERSIONED_CUDART AND NOT EXISTS "${FUSEDRNN_CUDA_ROOT}/lib/libcudart.so"
   AND NOT EXISTS "${FUSEDRNN_CUDA_ROOT}/lib64/libcudart.so")
  list(GET FUSEDRNN_VERSIONED_CUDART 0 FUSEDRNN_VERSIONED_CUDART)
  set(CUDA_CUDART "${FUSEDRNN_VERSIONED_CUDART}" CACHE FILEPATH "The CUDA runtime (of the PyPI wheels' toolkit)")
  message(STATUS "fusedrnn: CUDA toolkit from NVIDIA's wheels at ${FUSEDRNN_CUDA_ROOT}")
endif()
find_package(CUDAToolkit REQUIRED)
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)

add_library(fusedrnn_cuda_kernels STATIC
  csrc/cuda/buffer.cu
  csrc/cuda/cublas.cc
  csrc/cuda/gemm.cu
  csrc/cuda/forward.cu
  csrc/cuda/backward.cu
)
target_include_directories(fusedrnn_cuda_kernels PUBLIC csrc ${CUDAToolkit_INCLUDE_DIRS})
target_link_libraries(fusedrnn_cuda_kernels PRIVATE ${CMAKE_DL_LIBS})
set_target_properties(fusedrnn_cuda_kernels PROPERTIES
  POSITION_INDEPENDENT_CODE ON
  CUDA_VISIBILITY_PRESET hidden
  CXX_VISIBILITY_PRESET hidden)

pybind11_add_module(_cuda csrc/bind_cuda.cc csrc/bind_cuda_arrays.cc csrc/bind_cuda_gemm.cc)
target_include_directories(_cuda PRIVATE csrc ${CUDAToolkit_INCLUDE_DIRS})
target_link_libraries(_cuda PRIVATE fusedrnn_cuda_kernels)
string(REPLACE ";" "," FUSEDRNN_CUDA_ARCHITECTURES_STRING "${CMAKE_CUDA_ARCHITECTURES}")
target_compile_definitions(_cuda PRIVATE
  FUSEDRNN_CUDA_ARCHITECTURES="${FUSEDRNN_CUDA_ARCHITECTURES_STRING}"
  FUSEDRNN_NVCC_VERSION="${CMAKE_CUDA_COMPILER_VERSION}")

if(FUSEDRNN_CUDA_EMULATOR)
  if(NOT EXISTS "${FUSEDRNN_CUDA_EMULATOR}")
    message(FATAL_ERROR "FUSEDRNN_CUDA_EMULATOR: no file at ${FUSEDRNN_CUDA_EMULATOR}")
  endif()
  get_filename_component(FUSEDRNN_CUDA_EMULATOR_DIR "${FUSEDRNN_CUDA_EMULATOR}" DIRECTORY)
  set_target_properties(fusedrnn_cuda_kernels PROPERTIES CUDA_RUNTIME_LIBRARY None)
  target_link_libraries(_cuda PRIVATE "${FUSEDRNN_CUDA_EMULATOR}")
  # The emulator is a test tool: the module finds it where it was at build time.
  set_target_properties(_cuda PROPERTIES
    BUILD_RPATH "${FUSEDRNN_CUDA_EMULATOR_DIR}"
    INSTALL_RPATH "${FUSEDRNN_CUDA_EMULATOR_DIR}")
  # Seen by the kernels too: the GEMM dispatch then never loads cuBLAS.
  target_compile_definitions(fusedrnn_cuda_kernels PUBLIC FUSEDRNN_CUDA_EMULATED)
  message(STATUS "fusedrnn: CUDA backend linked against the emulator ${FUSEDRNN_CUDA_EMULATOR}")
else()
  # The static runtime: the module needs no libcudart on the library path, only the driver.
  set_target_properties(fusedrnn_cuda_kernels PROPERTIES CUDA_RUNTIME_LIBRARY Static)
  target_link_libraries(_cuda PRIVATE CUDA::cudart_static)
endif()
message(STATUS "fusedrnn: CUDA backend for architectures ${CMAKE_CUDA_ARCHITECTURES}")

install(TARGETS _cuda LIBRARY DESTINATION fusedrnn)

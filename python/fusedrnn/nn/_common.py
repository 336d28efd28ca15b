"""The argument checks fusedrnn.nn modules share, which live in fusedrnn._base; this module
keeps ``from ._common import ...`` working for the nn modules that still import them from here."""

from .._base import as_any_float_array, as_float_array, check_device, check_grad, matmul, resolve_dtype

__all__ = ["as_any_float_array", "as_float_array", "check_device", "check_grad", "matmul", "resolve_dtype"]

"""Pure functional ops: ``y, cache = op(x, ...)`` and ``grads = op_backward(dy, cache)``.

Every op is written against the array API, so the same code runs on NumPy, CuPy and
array_api_strict. Start reading at :mod:`.reference`: convolution, transposed
convolution and max pooling, forward and backward, from im2col / col2im and one
matrix multiply. :mod:`.fast` holds the speed-ups, each equal to a reference
function; :mod:`.conv` and :mod:`.pooling` validate the arguments and pick one.
``MINIFCN_REFERENCE=1`` or ``with use_reference(): ...`` runs the reference path.
"""
from .activation import dropout, dropout_backward, relu, relu_backward
from .conv import conv2d, conv2d_backward, conv_transpose2d, conv_transpose2d_backward
from .crop import crop, crop_backward
from .im2col import col2im, conv_output_size, conv_transpose_output_size, im2col, pad2d
from .loss import softmax_cross_entropy, softmax_cross_entropy_backward
from .norm import batch_norm2d, batch_norm2d_backward
from .mode import reference_enabled, use_reference
from .pooling import max_pool2d, max_pool2d_backward, max_pool2d_with_indices, pool_output_size
from .unpool import max_unpool2d, max_unpool2d_backward
from .resize import interpolate_bilinear, interpolate_bilinear_backward, interpolation_matrix

__all__ = [
    "conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward",
    "max_pool2d", "max_pool2d_backward", "max_pool2d_with_indices", "crop", "crop_backward",
    "relu", "relu_backward", "dropout", "dropout_backward",
    "softmax_cross_entropy", "softmax_cross_entropy_backward",
    "batch_norm2d", "batch_norm2d_backward", "max_unpool2d", "max_unpool2d_backward",
    "interpolate_bilinear", "interpolate_bilinear_backward", "interpolation_matrix",
    "use_reference", "reference_enabled",
    "im2col", "col2im", "pad2d", "conv_output_size", "conv_transpose_output_size", "pool_output_size",
]

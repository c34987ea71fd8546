"""Pure functional ops: ``y, cache = op(x, ...)`` and ``grads = op_backward(dy, cache)``.

Every op is written once against the array API, so the same code runs on NumPy,
CuPy and array_api_strict.
"""
from .activation import dropout, dropout_backward, relu, relu_backward
from .conv import conv2d, conv2d_backward, conv_transpose2d, conv_transpose2d_backward
from .crop import crop, crop_backward
from .im2col import col2im, conv_output_size, conv_transpose_output_size, im2col, pad2d
from .loss import softmax_cross_entropy, softmax_cross_entropy_backward
from .norm import batch_norm2d, batch_norm2d_backward
from .pooling import max_pool2d, max_pool2d_backward, pool_output_size
from .unpool import max_unpool2d, max_unpool2d_backward
from .resize import interpolate_bilinear, interpolate_bilinear_backward, interpolation_matrix

__all__ = [
    "conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward",
    "max_pool2d", "max_pool2d_backward", "crop", "crop_backward",
    "relu", "relu_backward", "dropout", "dropout_backward",
    "softmax_cross_entropy", "softmax_cross_entropy_backward",
    "batch_norm2d", "batch_norm2d_backward", "max_unpool2d", "max_unpool2d_backward",
    "interpolate_bilinear", "interpolate_bilinear_backward", "interpolation_matrix",
    "im2col", "col2im", "pad2d", "conv_output_size", "conv_transpose_output_size", "pool_output_size",
]

"""Fast paths, one module each; each equals a function of :mod:`..reference` (tests pin them):

==========  ============================================  ==================================
module      what it does                                  equals
==========  ============================================  ==================================
bands       im2col + GEMM a band of output rows at a      reference.conv2d (+ backward)
            time, on all cores, columns never stored;
            wide layers on few pixels (fc6, fc7) split
            by output channels instead
reach       padding beyond the kernel's reach is a        reference.conv2d
            bias-valued border
frame       the constant frame of FCN's padding 100,      reference.conv2d (+ backward)
            computed once per channel
phase       transposed conv as one stride-1 conv of the   reference.conv_transpose2d
            stacked stride-phase kernels + pixel shuffle  (+ backward)
diagonal    phase conv of a channel-diagonal weight       the dense phase plan, hence
            (FCN's bilinear upsampling), channel by       reference.conv_transpose2d
            channel, written pre-shuffled                 (+ backward)
winograd4   F(4x4, 3x3): 36 GEMMs on transformed tiles,   reference.conv2d (+ backward)
            4x fewer multiplies (3x3 layers, >= 64 ch)
winograd    F(2x2, 3x3): 16 GEMMs on transformed tiles,   reference.conv2d (+ backward)
            2.25x fewer multiplies (winograd4's dweight
            at >= 128 channels)
pool        max of KH*KW strided slices                   reference.max_pool2d (+ backward)
softmax     softmax cross-entropy a band of pixel rows    reference.softmax_logp,
            at a time, in cache, on all cores             reference.softmax_grad
norm        batch norm with per-channel sums as matrix    reference.batch_norm2d
            products and the affine parts in place        (+ backward)
==========  ============================================  ==================================

:mod:`minifcn.functional.conv`, :mod:`minifcn.functional.pooling`,
:mod:`minifcn.functional.norm` and :mod:`minifcn.functional.loss` choose among them.
"""

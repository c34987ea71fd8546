"""Fast paths, one module each; each equals a function of :mod:`..reference` (tests pin them):

==========  ============================================  ==================================
module      what it does                                  equals
==========  ============================================  ==================================
bands       im2col + GEMM a band of output rows at a      reference.conv2d (+ backward)
            time, on all cores, columns never stored
reach       padding beyond the kernel's reach is a        reference.conv2d
            bias-valued border
frame       the constant frame of FCN's padding 100,      reference.conv2d (+ backward)
            computed once per channel
phase       transposed conv as one stride-1 conv of the   reference.conv_transpose2d
            stacked stride-phase kernels + pixel shuffle  (+ backward)
diagonal    phase conv of a channel-diagonal weight       the dense phase plan, hence
            (FCN's bilinear upsampling), channel by       reference.conv_transpose2d
            channel, written pre-shuffled                 (+ backward)
winograd    F(2x2, 3x3): 16 GEMMs on transformed tiles,   reference.conv2d (+ backward)
            2.25x fewer multiplies (wide 3x3 layers)
pool        max of KH*KW strided slices                   reference.max_pool2d (+ backward)
==========  ============================================  ==================================

:mod:`minifcn.functional.conv` and :mod:`minifcn.functional.pooling` choose among them.
"""

"""minifcn: Fully Convolutional Networks from scratch, forward and backward by hand.

Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic Segmentation",
CVPR 2015 (arXiv:1411.4038). The same layer code runs on NumPy and CuPy.
"""
__version__ = "0.1.0"

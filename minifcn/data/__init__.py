"""Data: the VOC reader, transforms, the VOC download, and the built-in data set."""
from .transforms import (MEAN_BGR, deprocess, pad_batch, preprocess, random_crop, random_flip,
                         random_scale_crop, tile)
from .voc import IGNORE, VOC_CLASSES, VOCSegmentation, find_voc_root, read_image, read_label

__all__ = [
    "IGNORE", "MEAN_BGR", "VOC_CLASSES", "VOCSegmentation", "deprocess", "find_voc_root", "pad_batch",
    "preprocess", "random_crop", "random_flip", "random_scale_crop", "read_image", "read_label", "tile",
]

"""Data: Fashion-MNIST (Debian idx files), ImageNet-1K/21K folders, pixel-wise shifts, seeded sharded batches."""
from .fashion_mnist import CLASSES as FASHION_MNIST_CLASSES
from .fashion_mnist import FashionMNIST, carve_val, fashion_mnist_root, load_fashion_mnist
from .idx import IdxFormatError, read_idx
from .imagenet import ImageNetFolder, imagenet1k, imagenet21k, imagenet_transform
from .loaders import DATASET_READERS, ShardedBatchSampler, build_dataset, check_data, iterate
from .shifts import LINEAR_SHIFTS, NONLINEAR_SHIFTS, SHIFTS, Shift, make_shift

__all__ = [
    "DATASET_READERS", "FASHION_MNIST_CLASSES", "FashionMNIST", "IdxFormatError", "ImageNetFolder", "LINEAR_SHIFTS",
    "NONLINEAR_SHIFTS", "SHIFTS", "Shift", "ShardedBatchSampler", "build_dataset", "carve_val", "check_data",
    "fashion_mnist_root", "imagenet1k", "imagenet21k", "imagenet_transform", "iterate", "load_fashion_mnist",
    "make_shift", "read_idx",
]

"""scikit-learn's bundled 8x8 digits: no files and no download, the data set for fast tests and CI.

scikit-learn is imported only when the data set is loaded, so importing :mod:`lth.data` stays
cheap.
"""

from __future__ import annotations

import numpy as np

from .errors import DataError
from .paths import DataRoot
from .registry import DatasetSpec, RawData, register

_DIGITS_TEST_PER_CLASS = 36  # 360 test images, balanced over the 10 classes
_DIGITS_TEST_SEED = 20190301  # fixed forever: the digits test set must never change


def load_digits(spec: DatasetSpec, root: DataRoot | None, download: bool) -> RawData:
    """Loader for scikit-learn's bundled 8x8 digits (1797 images, values 0..16).

    There is no official test split, so a fixed, class-balanced one (36 images per class) is
    drawn with a constant seed: the test set is the same for every ``split_seed`` and every run,
    so test accuracies stay comparable.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as e:
        raise DataError(
            f"the 'digits' data set needs scikit-learn ({e}); install it with "
            "`pip install scikit-learn`"
        ) from None
    bunch = sklearn_load_digits()
    images = np.asarray(bunch.images)
    labels = np.asarray(bunch.target, dtype=np.int64)
    if images.min() < 0 or images.max() > 16 or not np.array_equal(images, np.round(images)):
        raise DataError("scikit-learn's digits data has unexpected values (not integers 0..16)")
    x = images.astype(np.uint8).reshape(-1, *spec.input_shape)

    # Stratified fixed test split: rank each image within its class along a fixed permutation.
    perm = np.random.Generator(np.random.PCG64(_DIGITS_TEST_SEED)).permutation(len(labels))
    by_class = perm[np.argsort(labels[perm], kind="stable")]
    counts = np.bincount(labels, minlength=spec.num_classes)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    rank = np.arange(len(labels)) - starts
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[by_class[rank < _DIGITS_TEST_PER_CLASS]] = True
    src = "sklearn.datasets.load_digits()"
    return RawData(x[~is_test], labels[~is_test], x[is_test], labels[is_test], src, src)


register(
    DatasetSpec(
        name="digits",
        input_shape=(1, 8, 8),
        num_classes=10,
        default_val_size=300,
        # mean/std of all 1797 images scaled to [0, 1]; fixed so they never drift.
        mean=(0.3053,),
        std=(0.3760,),
        pixel_scale=16.0,
        loader=load_digits,
        needs_data_dir=False,
        description="scikit-learn 8x8 digits: 1437 train / 360 fixed test, bundled",
    )
)

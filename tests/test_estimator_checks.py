"""The feature steps held to scikit-learn's own estimator checks, the suite every estimator of its ecosystem passes.

The checks fit on small arrays of 1 to 10 features. Each step here sees a row as an image of its `image_shape`; with
a -1 in it (inferred from the row, as numpy's reshape does) any row is a strip of pixels one high or one wide, so
every check applies and none is expected to fail. HOG runs with cells of one pixel and blocks of one cell, the only
ones a strip can hold. On one feature, an image of one pixel that no shift can move, `ShiftAugmented` refuses to fit
as scikit-learn's estimators refuse too few features, which is what `check_fit2d_1feature` asks. `ShiftAugmented`
wraps a KNN: the checks' points are not images, and a model that weighs the shifted copies like the points themselves
(an SVC) misses `check_classifiers_train`'s accuracy bar on them, while the nearest neighbour of a point is still
itself.
"""

from __future__ import annotations

from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils.estimator_checks import parametrize_with_checks

from mnist_dvc.study.features import Deskew, HogFeatures, ShiftAugmented

ROW, COLUMN = (1, -1), (-1, 1)

STEPS = [
    Deskew(image_shape=ROW),
    Deskew(image_shape=COLUMN),
    Deskew(enabled=False, image_shape=ROW),
    HogFeatures(pixels_per_cell=1, cells_per_block=1, image_shape=ROW),
    HogFeatures(orientations=4, pixels_per_cell=1, cells_per_block=1, keep_pixels=False, image_shape=COLUMN),
    ShiftAugmented(KNeighborsClassifier(), image_shape=ROW),
    ShiftAugmented(KNeighborsClassifier(n_neighbors=3), image_shape=COLUMN),
]


@parametrize_with_checks(STEPS)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)

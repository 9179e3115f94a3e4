"""Each stage's pure functions on tiny data (the scripts themselves run in test_scripts.py)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from sklearn.model_selection import StratifiedKFold, cross_val_predict

import split
import train_binary
import train_multiclass
from conftest import ROOT
from mnist_dvc.report import figures
from mnist_dvc.study import metrics
from mnist_dvc.study.errors import UserError
from mnist_dvc.study.schema import BinaryParams, MulticlassModels, MulticlassParams, SplitParams


def multiclass_models(params: MulticlassParams, handwritten: bool = True) -> dict:
    """Every model `params` names, as its stage `train_multiclass@<name>` builds it."""
    return {
        name: train_multiclass.build_model(name, getattr(params.models, name), handwritten)
        for name in params.models.names()
    }


def test_canonical_split_keeps_the_order_and_the_boundary():
    images, labels = np.arange(10 * 4).reshape(10, 2, 2), np.arange(10)
    _, test_images, train_labels, test_labels = split.split_dataset(
        images, labels, 7, SplitParams(test_size=0.5, seed=0)
    )
    assert train_labels.tolist() == list(range(7)) and test_labels.tolist() == [7, 8, 9]
    np.testing.assert_array_equal(test_images, images[7:])


def test_random_split_is_stratified_and_seeded(sample):
    images, labels = sample
    params = SplitParams(test_size=0.2, seed=3)
    first = split.split_dataset(images, labels, None, params)
    second = split.split_dataset(images, labels, None, params)
    assert len(first[3]) == 120 and np.bincount(first[3]).tolist() == [12] * 10
    np.testing.assert_array_equal(first[1], second[1])


def test_class_counts_name_every_class():
    assert split.class_counts(np.array([0, 2, 2], np.uint8), ["a", "b", "c"]) == {"a": 1, "b": 0, "c": 2}


def test_digit_grid_tiles_images_row_by_row():
    images = np.stack([np.full((2, 2), value) for value in (1, 2, 3)])
    grid = figures.digit_grid(images, columns=2)
    assert grid.tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 0, 0], [3, 3, 0, 0]]


def test_threshold_for_precision_is_the_lowest_that_reaches_it():
    truth = np.array([0, 0, 1, 0, 1, 1])
    scores = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    # at threshold 3: 3 of 4 positive (0.75); at 5: 2 of 2 (1.0) with recall 2/3
    assert metrics.threshold_for_precision(truth, scores, 0.75) == (3.0, 1.0)
    threshold, recall = metrics.threshold_for_precision(truth, scores, 0.9)
    assert threshold == 5.0 and recall == pytest.approx(2 / 3)


def test_threshold_for_precision_none_when_unreachable():
    assert metrics.threshold_for_precision(np.array([1, 0]), np.array([0.0, 1.0]), 1.0) is None


def test_curves_are_thinned_but_keep_their_ends():
    keep = metrics.thin(10_000)
    assert len(keep) == metrics.MAX_CURVE_POINTS and keep[0] == 0 and keep[-1] == 9_999
    assert metrics.thin(3).tolist() == [0, 1, 2]


def test_multilabel_targets_are_large_and_odd():
    targets = metrics.multilabel_targets(np.array([0, 7, 8, 9, 3], np.uint8))
    assert targets.tolist() == [[False, False], [True, True], [True, False], [True, True], [False, True]]


def test_binary_scores_beat_the_dummy_on_real_digits(sample):
    images, labels = sample
    params = BinaryParams.model_validate(yaml.safe_load((ROOT / "params.yaml").read_text())["binary"])
    features, target = images.reshape(len(images), -1) / 255, labels == params.digit
    models = train_binary.build_models(params)
    split = train_binary.threshold_split(params, target, "5")
    scores, forest, (deployed, _) = train_binary.out_of_sample_scores(models, features, target, params, split)
    results = {}
    for name, model in {**models, "forest": forest}.items():
        assert scores[name].shape == (len(target),)
        cutoff = metrics.decision_cutoff(model)
        reached = metrics.threshold_for_precision(target, scores[name], params.target_precision)
        results[name] = train_binary.evaluate_scores(target, scores[name], cutoff, reached)
    assert results["dummy"]["accuracy"] == pytest.approx(0.9) and results["dummy"]["recall"] == 0
    assert results["sgd"]["roc_auc"] > 0.9 and results["forest"]["roc_auc"] > 0.9
    assert results["sgd"]["f1"] > results["dummy"]["f1"]
    # The folds as jobs give what scikit-learn's cross_val_predict gives, to the bit.
    folds = StratifiedKFold(n_splits=params.cv_folds)
    expected = cross_val_predict(models["sgd"], features, target, cv=folds, method="decision_function")
    assert scores["sgd"].tobytes() == expected.tobytes()
    expected = cross_val_predict(models["dummy"], features, target, cv=folds, method="predict_proba")[:, 1]
    assert scores["dummy"].tobytes() == expected.tobytes()
    assert np.isclose(deployed.threshold, train_binary.thresholded_sgd(params, features, target, split)[0].threshold)


def test_every_multiclass_model_learns_the_digits(sample):
    images, labels = sample
    params = MulticlassParams.model_validate(yaml.safe_load((ROOT / "params.yaml").read_text())["multiclass"])
    features = images.reshape(len(images), -1).astype(np.float32) / 255
    models = multiclass_models(params)
    assert list(models) == list(MulticlassModels.model_fields)
    accuracy = {}
    for name, model in models.items():
        accuracy[name] = (model.fit(features[:500], labels[:500]).predict(features[500:]) == labels[500:]).mean()
        assert accuracy[name] > 0.75, name
    assert max(accuracy, key=accuracy.get) == "svc_hog"  # the engineered features win even on 500 digits


def test_shift_augmentation_wraps_any_model_that_asks_for_it():
    from mnist_dvc.study.features import ShiftAugmented

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())["multiclass"]
    for name in ("knn", "forest"):
        raw["models"][name]["augment_shifts"] = True
    models = multiclass_models(MulticlassParams.model_validate(raw))
    wrapped = {name for name, model in models.items() if isinstance(model, ShiftAugmented)}
    assert wrapped == {"knn", "forest"}


def test_the_per_image_steps_are_split_off_the_front_of_a_pipeline_only():
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline
    from sklearn.svm import SVC

    from mnist_dvc.study.features import Deskew, HogFeatures, ShiftAugmented

    pipeline = Pipeline([("deskew", Deskew()), ("hog", HogFeatures()), ("pca", PCA(5)), ("svc", SVC())])
    steps, rest = train_multiclass.split_per_image_steps(pipeline)
    assert list(steps.named_steps) == ["deskew", "hog"] and list(rest.named_steps) == ["pca", "svc"]
    learned_first = Pipeline([("pca", PCA(5)), ("deskew", Deskew()), ("svc", SVC())])
    for model in (learned_first, SVC(), ShiftAugmented(pipeline)):
        assert train_multiclass.split_per_image_steps(model) == (None, model)
    steps, rest = train_multiclass.split_per_image_steps(Pipeline([("deskew", Deskew()), ("svc", SVC())]))
    assert list(steps.named_steps) == ["deskew"] and list(rest.named_steps) == ["svc"]


def test_input_width_counts_the_features_the_first_learning_step_gets():
    """What sizes the params' checks and the memory estimate: HOG's width with or without PCA and shifted copies."""
    from sklearn.decomposition import PCA
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from mnist_dvc.study.features import Deskew, HogFeatures

    pixels = np.zeros((3, 784), np.float32)
    hog_only = Pipeline([("deskew", Deskew()), ("hog", HogFeatures(keep_pixels=False)), ("svc", SVC())])
    with_pca = Pipeline([("deskew", Deskew()), ("hog", HogFeatures()), ("scale", StandardScaler()), ("pca", PCA(5))])
    cases = [
        (hog_only, 2025),
        (train_multiclass.shift_augmented(hog_only), 2025),  # deskewing, then HOG inside ShiftAugmented
        (with_pca, 2025 + 784),
        (KNeighborsClassifier(), 784),
        (train_multiclass.shift_augmented(KNeighborsClassifier()), 784),
        (Pipeline([("scale", StandardScaler()), ("hog", HogFeatures())]), 784),  # HOG after a learned step
    ]
    for model, width in cases:
        assert train_multiclass.input_width(model, pixels) == width, model


@pytest.mark.parametrize("max_train_samples", [None, 350])
def test_fitting_with_per_image_steps_once_gives_what_fitting_the_whole_model_gives(
    sample, tmp_path, max_train_samples
):
    """svc_hog's deskew and HOG run once per image, yet the saved model and its CV predictions are those of the whole
    pipeline fitted on each set, byte for byte; the KNN, without such steps, is fitted as it is."""
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_predict

    from mnist_dvc.files.models import save_model

    images, labels = sample
    features = images.reshape(len(images), -1).astype(np.float32) / 255
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())["multiclass"]
    svc_hog = raw["models"]["svc_hog"] | {"pca_components": 20, "max_train_samples": max_train_samples}
    raw["models"] = {"svc_hog": svc_hog, "knn": raw["models"]["knn"]}
    params = MulticlassParams.model_validate(raw)
    fit_on = (features[:400], labels[:400])
    folds = StratifiedKFold(n_splits=3)
    for name, model in multiclass_models(params).items():
        fit_size = getattr(getattr(params.models, name), "max_train_samples", None)
        fitted, cv_predicted = train_multiclass.fit_and_cross_validate(name, model, fit_size, fit_on, (300, folds))
        whole = clone(model).fit(fit_on[0][:fit_size], fit_on[1][:fit_size])
        save_model(tmp_path / "once.skops", fitted)
        save_model(tmp_path / "whole.skops", whole)
        assert (tmp_path / "once.skops").read_bytes() == (tmp_path / "whole.skops").read_bytes(), name
        np.testing.assert_array_equal(fitted.predict(features[400:]), whole.predict(features[400:]))
        cv_whole = cross_val_predict(clone(model), features[:300], labels[:300], cv=folds)
        np.testing.assert_array_equal(cv_predicted, cv_whole)


def test_most_confused_pair_counts_both_directions():
    # 0 -> 1 is the largest single cell, but 1 and 2 are mixed up more in total (4 + 4)
    matrix = np.array([[9, 5, 0], [0, 8, 4], [0, 4, 7]])
    assert figures.most_confused_pair(matrix) == (1, 2)


def test_the_best_model_has_the_highest_accuracy_and_a_tie_goes_to_the_cheaper():
    assert metrics.best_model({"svc_ovo": 0.95, "svc_ovr": 0.97, "forest": 0.96}) == "svc_ovr"
    assert metrics.best_model({"svc_hog": 0.96, "svc_ovr": 0.96, "forest": 0.96}) == "forest"
    assert metrics.best_model({"svc_ovr": 0.98, "svc_hog": 0.98, "sgd": 0.5}) == "svc_hog"
    assert set(metrics.CHEAPEST_FIRST) == set(MulticlassModels.model_fields)


def test_the_validation_split_is_stratified_seeded_and_disjoint(sample):
    _, labels = sample
    params = MulticlassParams.model_validate(yaml.safe_load((ROOT / "params.yaml").read_text())["multiclass"])
    learn, choose = train_multiclass.validation_split(labels, params)
    assert len(choose) == 60 and np.bincount(labels[choose]).tolist() == [6] * 10
    assert sorted(np.concatenate([learn, choose]).tolist()) == list(range(len(labels)))
    again = train_multiclass.validation_split(labels, params)
    np.testing.assert_array_equal(again[1], choose)


def test_noisy_pixels_follow_the_chapter_and_each_stream_differs():
    from mnist_dvc.study import denoise

    images = np.full((3, 28, 28), 200, np.uint8)
    noisy = denoise.noisy_pixels(images, 100, seed=1, stream=denoise.TRAIN_STREAM)
    on_pixel_scale = noisy * 255
    assert noisy.shape == (3, 784) and noisy.dtype == np.float32
    assert on_pixel_scale.min() >= 199.99 and on_pixel_scale.max() <= 299.01  # 200 + [0, 100)
    np.testing.assert_array_equal(noisy, denoise.noisy_pixels(images, 100, seed=1, stream=denoise.TRAIN_STREAM))
    assert not np.array_equal(noisy, denoise.noisy_pixels(images, 100, seed=1, stream=denoise.TEST_STREAM))
    assert denoise.mean_absolute_error(images, on_pixel_scale) == pytest.approx(49.5, abs=3)


def test_the_threshold_carried_by_the_deployed_sgd_is_applied_to_the_test_scores():
    from sklearn.frozen import FrozenEstimator
    from sklearn.linear_model import SGDClassifier
    from sklearn.model_selection import FixedThresholdClassifier

    import evaluate

    rng = np.random.default_rng(0)
    features = rng.random((200, 4))
    target = features[:, 0] + 0.3 * rng.random(200) > 0.7
    sgd = SGDClassifier(random_state=0).fit(features, target)
    scores = sgd.decision_function(features)
    threshold = float(np.quantile(scores, 0.8))
    deployed = FixedThresholdClassifier(FrozenEstimator(sgd), threshold=threshold, response_method="decision_function")
    deployed.fit(features, target)
    # What train_binary writes for the deployed SGD: its scores, its answers at 0, and its answers at the threshold.
    answers = {"sgd": (scores, scores > 0)}
    metrics = evaluate.evaluate_binary(answers, deployed.predict(features), target, 0.9)
    test, held = metrics["sgd"]["test"], metrics["sgd_at_target_precision"]["test"]
    chosen = scores >= threshold
    assert held["precision"] == round(float(target[chosen].mean()), 6)
    assert held["recall"] == round(float(chosen[target].mean()), 6)
    assert held["precision"] != test["precision"]  # the plain SGD's own cutoff is 0, not the threshold
    for name in ("precision", "recall"):
        assert held[f"{name}_low"] < held[name] <= held[f"{name}_high"] <= 1
    # The test set's own best point: the lowest threshold of the same scores reaching precision 0.9.
    reached = [t for t in np.sort(scores) if target[scores >= t].mean() >= 0.9]
    assert test["threshold_at_target_precision"] == round(float(reached[0]), 6)


def test_deskewing_follows_the_dataset_unless_set():
    assert train_multiclass.deskews("auto", handwritten=True) and not train_multiclass.deskews(
        "auto", handwritten=False
    )
    assert train_multiclass.deskews(True, handwritten=False) and not train_multiclass.deskews(False, handwritten=True)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())["multiclass"]
    assert raw["models"]["svc_hog"]["deskew"] == "auto"
    for handwritten in (True, False):
        models = multiclass_models(MulticlassParams.model_validate(raw), handwritten=handwritten)
        assert models["svc_hog"].named_steps["deskew"].enabled is handwritten


@pytest.mark.parametrize(
    ("holdout", "expected"),
    [
        (0.001, "binary.threshold_holdout = 0.001 holds out 1 of 600 training images: use at least 0.01667"),
        (0.004, "binary.threshold_holdout = 0.004 holds out 3 training images, none of them '5': the threshold is"),
    ],
)
def test_a_holdout_too_small_to_choose_a_threshold_names_the_holdout(sample, holdout, expected):
    _, labels = sample
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())["binary"]
    params = BinaryParams.model_validate({**raw, "threshold_holdout": holdout})
    with pytest.raises(UserError, match=expected.replace("(", r"\(").replace("?", r"\?")):
        train_binary.threshold_split(params, labels == 5, "5")


def test_shifted_copies_come_after_deskewing_and_change_what_the_model_learns(sample):
    images, labels = sample
    features = images.reshape(len(images), -1).astype(np.float32) / 255
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())["multiclass"]
    svc_hog = {**raw["models"]["svc_hog"], "deskew": True, "pca_components": 20}
    plain = MulticlassParams.model_validate({**raw, "models": {"svc_hog": svc_hog}})
    shifted = MulticlassParams.model_validate({**raw, "models": {"svc_hog": {**svc_hog, "augment_shifts": True}}})
    model = multiclass_models(shifted)["svc_hog"]
    assert list(model.named_steps) == ["deskew", "shifted"]  # deskewed images are shifted, not the other way round
    predictions = {}
    for name, params in (("plain", plain), ("shifted", shifted)):
        model = multiclass_models(params)["svc_hog"]
        predictions[name] = model.fit(features[:300], labels[:300]).predict(features[300:])
    assert (predictions["plain"] != predictions["shifted"]).any()  # the copies teach it something

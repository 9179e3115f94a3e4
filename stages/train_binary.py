"""Stage `train_binary`: 'is it a 5?' with SGD, a dummy baseline and a random forest, cross-validated.

Writes the models, their cross-validated (and out-of-bag) metrics, the data behind the `report` stage's binary
figures (the curves for `dvc plots`, and every training image's out-of-sample scores), and each model's scores and
answers for the test images, which `evaluate` scores (their labels are never read here).
"""

from __future__ import annotations

import mnist_dvc.runtime.numeric_profile  # noqa: F401  (first: it sets how numpy and scipy compute before they load)

from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import FixedThresholdClassifier, StratifiedKFold, cross_val_predict, train_test_split

from mnist_dvc.files.arrays import first_n, load_class_names, load_split, load_split_images, save_arrays, to_features
from mnist_dvc.files.curves import write_curves
from mnist_dvc.files.disk import write_csv, write_json
from mnist_dvc.files.models import save_model
from mnist_dvc.files.paths import ANSWERS_DIR, BINARY_CV_SCORES_FILE, METRICS_DIR, MODELS_DIR
from mnist_dvc.parallel.workers import Job, run_jobs, stage_workers
from mnist_dvc.runtime.messages import log
from mnist_dvc.runtime.params import binary_class_name, check_folds, load_params
from mnist_dvc.runtime.runner import refused_by_estimator, run_stage
from mnist_dvc.study.errors import UserError
from mnist_dvc.study.metrics import (
    BINARY_FEATURES_DTYPE,
    THRESHOLDED_SGD,
    binary_metrics,
    check_both_classes,
    decision_cutoff,
    is_target,
    one_answer_only,
    positive_scores,
    rounded,
    score_method,
    threshold_for_precision,
)
from mnist_dvc.study.schema import BinaryParams


def build_models(params: BinaryParams) -> dict[str, Any]:
    return {
        "sgd": SGDClassifier(**params.sgd.model_dump()),
        "dummy": DummyClassifier(**params.dummy.model_dump()),
        # Out-of-bag probabilities give honest scores for the ROC curve from a single fit.
        "forest": RandomForestClassifier(**params.forest.model_dump(exclude={"max_train_samples"}), oob_score=True),
    }


def cv_scores(name: str, model: Any, features: np.ndarray, target: np.ndarray, folds: StratifiedKFold) -> np.ndarray:
    """One job: the model's cross-validated scores for 'yes', by scikit-learn's `cross_val_predict` (its folds one
    after the other, inside the job: the forest beside it is the longest job, so folds as jobs of their own gained
    nothing, measured in docs/design.md)."""
    with refused_by_estimator(f"binary.{name}"):
        scores = cross_val_predict(model, features, target, cv=folds, method=score_method(model))
    return scores if scores.ndim == 1 else scores[:, 1]


def forest_scores(forest: RandomForestClassifier, features: np.ndarray, target: np.ndarray) -> tuple[Any, np.ndarray]:
    """One job: the forest fitted, and its out-of-bag scores for every image it learned from."""
    with refused_by_estimator("binary.forest"):
        fitted = clone(forest).fit(features, target)
    return fitted, oob_scores(fitted)


def out_of_sample_scores(
    models: dict[str, Any],
    features: np.ndarray,
    target: np.ndarray,
    params: BinaryParams,
    held_out_split: tuple[np.ndarray, np.ndarray],
) -> tuple[dict[str, np.ndarray], RandomForestClassifier, tuple[Any, dict[str, Any]]]:
    """Scores for every training image from models that did not learn from it, as jobs on the stage's workers: the
    forest's out-of-bag scores (on its first `max_train_samples` images), the CV folds of SGD and the dummy, and,
    beside them, the deployed SGD with its threshold. Returns the scores, the fitted forest, and the deployed SGD.
    """
    forest_features, forest_target = first_n(params.forest.max_train_samples, features, target)
    folds = StratifiedKFold(n_splits=params.cv_folds)
    jobs: list[Job] = [
        ("forest: out-of-bag scores", forest_scores, (models["forest"], forest_features, forest_target)),
        ("sgd: threshold on held-out images", thresholded_sgd_job, (params, features, target, *held_out_split)),
        (f"sgd: {params.cv_folds}-fold CV", cv_scores, ("sgd", models["sgd"], features, target, folds)),
        (f"dummy: {params.cv_folds}-fold CV", cv_scores, ("dummy", models["dummy"], features, target, folds)),
    ]
    log(
        f"out-of-sample scores: sgd and dummy by {params.cv_folds}-fold CV on {len(target)} images, the forest "
        f"out-of-bag on {len(forest_target)}; sgd's threshold for precision {params.target_precision}"
    )
    (forest, forest_oob), deployed, sgd, dummy = run_jobs(jobs)
    return {"forest": forest_oob, "sgd": sgd, "dummy": dummy}, forest, deployed


def oob_scores(forest: RandomForestClassifier) -> np.ndarray:
    """The forest's out-of-bag probabilities, refused when some image was in every tree's bootstrap sample.

    scikit-learn only warns then and scores such images 0, which silently lowers the ROC AUC.
    """
    votes = forest.oob_decision_function_
    missing = int(np.count_nonzero(votes.sum(axis=1) == 0))
    if missing:
        raise UserError(
            f"params.yaml: binary.forest.n_estimators = {forest.n_estimators} leaves {missing} training images "
            "without an out-of-bag score (each was drawn into every tree): use more trees (100 is the default)"
        )
    return votes[:, 1]


def threshold_split(params: BinaryParams, target: np.ndarray, class_name: str) -> tuple[np.ndarray, np.ndarray]:
    """The training images the deployed SGD learns from, and those its threshold is chosen on (stratified, seeded):
    the second part must hold both answers, or no threshold can be chosen on it."""
    n_held = int(np.ceil(params.threshold_holdout * len(target)))
    positives = int(target.sum())
    minimum = -(-len(target) // min(positives, len(target) - positives))  # one of the rarer answer, in proportion
    key = f"params.yaml: binary.threshold_holdout = {params.threshold_holdout}"
    advice = f"use at least {minimum / len(target):.4g}"
    if n_held < 2:
        raise UserError(f"{key} holds out {n_held} of {len(target)} training images: {advice}")
    learn, held_out = train_test_split(
        np.arange(len(target)), test_size=params.threshold_holdout, stratify=target, random_state=params.threshold_seed
    )
    some = one_answer_only(target[held_out])
    if some:
        raise UserError(
            f"{key} holds out {len(held_out)} training images, {some} of them '{class_name}': the threshold is chosen "
            f"among both answers: {advice}"
        )
    return learn, held_out


def thresholded_sgd_job(
    params: BinaryParams, features: np.ndarray, target: np.ndarray, learn: np.ndarray, held_out: np.ndarray
) -> tuple[Any, dict[str, Any]]:
    with refused_by_estimator("binary.sgd"):
        return thresholded_sgd(params, features, target, (learn, held_out))


def thresholded_sgd(
    params: BinaryParams, features: np.ndarray, target: np.ndarray, split: tuple[np.ndarray, np.ndarray]
) -> tuple[Any, dict[str, Any]]:
    """The deployed SGD: it says 'yes' from the lowest score reaching the target precision, chosen on its own scores.

    The chapter picks the threshold on cross-validated scores; applied to a model refitted on every image, whose
    decision function has another scale, it no longer gives that precision (on the sample: 0.92 and recall 0.46
    for a target of 0.90 on the cross-validated 0.668). Here one SGD learns from most training images and the
    threshold is chosen on the others, scored by that same SGD; the saved model is that SGD with its threshold
    (scikit-learn's FixedThresholdClassifier), so `predict` applies the threshold where it was chosen.
    """
    learn, held_out = split
    sgd = SGDClassifier(**params.sgd.model_dump()).fit(features[learn], target[learn])
    scores = sgd.decision_function(features[held_out])
    reached = threshold_for_precision(target[held_out], scores, params.target_precision)
    if reached is None:
        raise UserError(
            f"params.yaml: binary.target_precision = {params.target_precision}: no threshold of SGD reaches it on the "
            f"{len(held_out)} held-out training images; choose a lower target, or hold out more images "
            "(binary.threshold_holdout)"
        )
    threshold, recall = reached
    model = FixedThresholdClassifier(FrozenEstimator(sgd), threshold=threshold, response_method="decision_function")
    model.fit(features[held_out], target[held_out])  # the frozen SGD is not refitted: this only checks the data
    choice = {"threshold": rounded(threshold), "recall": rounded(recall), "held_out_images": len(held_out)}
    return model, choice


def check_forest_subset(target: np.ndarray, max_train_samples: int | None, class_name: str) -> None:
    """The forest's first N training images must hold both answers, or it has nothing to learn."""
    some = one_answer_only(target)
    if max_train_samples is not None and some:
        raise UserError(
            f"params.yaml: binary.forest.max_train_samples = {max_train_samples}: "
            f"{some} of the first {len(target)} training images are '{class_name}', "
            "and the forest needs both answers to learn: raise it (null = every training image)"
        )


def evaluate_scores(
    truth: np.ndarray, scores: np.ndarray, cutoff: float, reached: tuple[float, float] | None
) -> dict[str, Any]:
    """Metrics at the model's own cutoff, and the threshold reaching the target precision with its recall."""
    metrics: dict[str, Any] = binary_metrics(truth, scores > cutoff, scores)
    metrics["threshold_at_target_precision"] = None if reached is None else rounded(reached[0])
    metrics["recall_at_target_precision"] = None if reached is None else rounded(reached[1])
    return metrics


def test_answers(models: dict[str, Any], features: np.ndarray) -> dict[str, np.ndarray]:
    """Each model's scores for 'yes' on the test images and its answers at its own cutoff (0 for a decision
    function, 0.5 for a probability, as in cross-validation): `sgd` is the deployed SGD at 0; and the deployed SGD's
    `predict` (`sgd_at_target_precision`), which applies the threshold chosen for the target precision."""
    answers = {}
    for name in ("sgd", "dummy", "forest"):
        model = models[THRESHOLDED_SGD if name == "sgd" else name]
        scores = positive_scores(model, features)
        answers |= {f"{name}_scores": scores, f"{name}_answers": scores > decision_cutoff(model)}
    answers[f"{THRESHOLDED_SGD}_answers"] = models[THRESHOLDED_SGD].predict(features)
    return answers


def main() -> None:
    params = load_params("binary", BinaryParams)
    images, labels = load_split("train")
    class_name = binary_class_name(params.digit, load_class_names())
    features, target = to_features(images, BINARY_FEATURES_DTYPE), is_target(labels, params.digit)
    check_both_classes(target, params.digit, class_name, "training")
    check_folds("binary.cv_folds", params.cv_folds, target)
    log(f"'is it a {class_name}?': {target.sum()} of {len(target)} training images are positives")
    # The forest is the slow one at full size: it may learn from the first N images only (all on the sample).
    check_forest_subset(target[: params.forest.max_train_samples], params.forest.max_train_samples, class_name)

    models = build_models(params)
    split = threshold_split(params, target, class_name)
    scores, forest, (deployed, choice) = out_of_sample_scores(models, features, target, params, split)
    with refused_by_estimator("binary.dummy"):
        dummy = clone(models["dummy"]).fit(features, target)
    # The plain SGD is only cross-validated; the SGD that is saved and tested is the one with its threshold.
    fitted = {THRESHOLDED_SGD: deployed, "dummy": dummy, "forest": forest}
    metrics: dict[str, Any] = {}
    scored: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in ("sgd", "dummy", "forest"):
        (model_target,) = first_n(params.forest.max_train_samples if name == "forest" else None, target)
        scored[name] = model_target, scores[name]
        kind = "oob" if name == "forest" else "cv"
        reached = threshold_for_precision(model_target, scores[name], params.target_precision)
        metrics[name] = {kind: evaluate_scores(model_target, scores[name], decision_cutoff(models[name]), reached)}
        log(f"{name}: {metrics[name][kind]}")
    metrics[THRESHOLDED_SGD] = {"threshold_choice": choice}
    log(f"{THRESHOLDED_SGD}: {choice}")

    answers = test_answers(fitted, to_features(load_split_images("test"), BINARY_FEATURES_DTYPE))

    # Outputs only once every model is fitted: a refused param leaves nothing behind.
    for name, model in fitted.items():
        save_model(MODELS_DIR / "binary" / f"{name}.skops", model)
    save_arrays(ANSWERS_DIR / "binary", answers)
    write_json(METRICS_DIR / "binary_cv.json", {"binary": metrics})

    write_curves(scored, "cv")
    forest_column = np.full(len(target), np.nan)  # the forest scores its first max_train_samples images only
    forest_column[: len(scores["forest"])] = scores["forest"]
    columns = {"truth": target.astype(np.int8), "sgd": scores["sgd"], "forest": forest_column}
    write_csv(BINARY_CV_SCORES_FILE, columns, digits=9)  # enough for the report to find the same threshold


if __name__ == "__main__":
    run_stage(main, __doc__, workers=stage_workers)

"""The schema of params.yaml: one model per section, unknown keys refused.

Model sections use the estimator's own argument names, so a section is passed on as keyword arguments.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SplitParams(Params):
    test_size: float = Field(gt=0, lt=1, description="fraction held out when a dataset has no canonical split")
    seed: int = Field(ge=0)


class ComputeParams(Params):
    n_jobs: int = Field(ge=-1, description="parallel workers for forests, CV and KNN; -1 = all cores")

    @field_validator("n_jobs")
    @classmethod
    def not_zero(cls, n_jobs: int) -> int:
        if n_jobs == 0:
            raise ValueError("must be -1 (all cores) or a positive number of workers")
        return n_jobs


class SGDParams(Params):
    alpha: float = Field(gt=0)
    max_iter: int = Field(ge=1)
    early_stopping: bool
    random_state: int = Field(ge=0)


class ScaledSGDParams(SGDParams):
    standardize: bool


class ForestParams(Params):
    n_estimators: int = Field(ge=1)
    max_depth: int | None = Field(default=None, ge=1)
    random_state: int = Field(ge=0)


class DummyParams(Params):
    strategy: Literal["most_frequent", "prior", "stratified", "uniform"]
    random_state: int = Field(ge=0)


class BinaryParams(Params):
    digit: int = Field(ge=0, le=9, description="the class index to detect ('is it a 5?')")
    cv_folds: int = Field(ge=2)
    target_precision: float = Field(gt=0, le=1)
    sgd: SGDParams
    dummy: DummyParams
    forest: ForestParams


class SVCParams(Params):
    C: float = Field(gt=0)
    gamma: Literal["scale", "auto"] | Annotated[float, Field(gt=0)]
    pca_components: int | None = Field(default=None, ge=1, le=784)
    max_train_samples: int | None = Field(default=None, ge=10)


class MulticlassModels(Params):
    svc_ovo: SVCParams | None = Field(default=None, description="SVC (one-vs-one)")
    svc_ovr: SVCParams | None = Field(default=None, description="one-vs-rest SVC")
    forest: ForestParams | None = Field(default=None, description="random forest")
    sgd: ScaledSGDParams | None = Field(default=None, description="SGD (one-vs-rest)")

    @staticmethod
    def describe(name: str) -> str:
        return MulticlassModels.model_fields[name].description or name


class MulticlassParams(Params):
    cv_folds: int = Field(ge=2)
    cv_max_samples: int | None = Field(default=None, ge=10)
    models: MulticlassModels

    @field_validator("models")
    @classmethod
    def at_least_one(cls, models: MulticlassModels) -> MulticlassModels:
        if not models.model_dump(exclude_none=True):
            raise ValueError(f"enable at least one model of: {', '.join(MulticlassModels.model_fields)}")
        return models


class KNNParams(Params):
    n_neighbors: int = Field(ge=1)
    weights: Literal["uniform", "distance"]


class MultilabelParams(Params):
    cv_folds: int = Field(ge=2)
    cv_max_samples: int | None = Field(default=None, ge=10)
    knn: KNNParams

"""The schema of params.yaml: one model per section, unknown keys refused.

Model sections use the estimator's own argument names, so a section is passed on as keyword arguments. Every
bound is one the estimator accepts too (a test builds each estimator at each bound), and size params have an
upper bound so that an absurd value is refused at once instead of running for hours.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_SEED = 2**32 - 1  # numpy's and scikit-learn's random_state accept 0 .. 2**32 - 1

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
ClassIndex = Annotated[int, Field(ge=0, le=9, description="a class index: the digit, or the Fashion-MNIST item")]
Folds = Annotated[int, Field(ge=2, le=100)]
SampleCount = Annotated[int, Field(ge=10, le=1_000_000)]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SplitParams(Params):
    test_size: float = Field(gt=0, lt=1, description="fraction held out when a dataset has no canonical split")
    seed: Seed


class SGDParams(Params):
    alpha: Positive
    max_iter: int = Field(ge=1, le=100_000)
    early_stopping: bool
    random_state: Seed


class ScaledSGDParams(SGDParams):
    standardize: bool


class ForestParams(Params):
    n_estimators: int = Field(ge=1, le=5_000)
    max_depth: int | None = Field(default=None, ge=1, le=1_000)
    random_state: Seed


class DummyParams(Params):
    strategy: Literal["most_frequent", "prior", "stratified", "uniform"]
    random_state: Seed


class BinaryParams(Params):
    digit: ClassIndex
    cv_folds: Folds
    target_precision: float = Field(gt=0, le=1)
    sgd: SGDParams
    dummy: DummyParams
    forest: ForestParams


class SVCParams(Params):
    C: Positive
    gamma: Literal["scale", "auto"] | Positive
    pca_components: int | None = Field(default=None, ge=1, le=784)
    max_train_samples: SampleCount | None = None


class MulticlassModels(Params):
    svc_ovo: SVCParams | None = Field(default=None, description="SVC (one-vs-one)")
    svc_ovr: SVCParams | None = Field(default=None, description="one-vs-rest SVC")
    forest: ForestParams | None = Field(default=None, description="random forest")
    sgd: ScaledSGDParams | None = Field(default=None, description="SGD (one-vs-rest)")

    @staticmethod
    def describe(name: str) -> str:
        return MulticlassModels.model_fields[name].description or name


class MulticlassParams(Params):
    cv_folds: Folds
    cv_max_samples: SampleCount | None = None
    models: MulticlassModels

    @field_validator("models")
    @classmethod
    def at_least_one(cls, models: MulticlassModels) -> MulticlassModels:
        if not models.model_dump(exclude_none=True):
            raise ValueError(f"enable at least one model of: {', '.join(MulticlassModels.model_fields)}")
        return models


class KNNParams(Params):
    n_neighbors: int = Field(ge=1, le=1_000)
    weights: Literal["uniform", "distance"]


class MultilabelParams(Params):
    cv_folds: Folds
    cv_max_samples: SampleCount | None = None
    knn: KNNParams

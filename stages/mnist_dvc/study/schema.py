"""The schema of params.yaml: one model per section, unknown keys refused.

Model sections use the estimator's own argument names, so a section is passed on as keyword arguments. Every
bound is one the estimator accepts too (a test builds each estimator at each bound), and size params have an
upper bound so that an absurd value is refused at once instead of running for hours.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_SEED = 2**32 - 1  # numpy's and scikit-learn's random_state accept 0 .. 2**32 - 1

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
ClassIndex = Annotated[int, Field(ge=0, le=9, description="a class index: the digit, or the Fashion-MNIST item")]
Folds = Annotated[int, Field(ge=2, le=100)]
Probability = Annotated[float, Field(gt=0, le=1)]
NoiseAmplitude = Annotated[
    int, Field(ge=1, le=255, description="each pixel gets an integer in [0, noise) added, on 0..255")
]
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
    max_train_samples: SampleCount | None = None  # learns from the first N training images (None = all)


class DummyParams(Params):
    strategy: Literal["most_frequent", "prior", "stratified", "uniform"]
    random_state: Seed


class BinaryParams(Params):
    digit: ClassIndex
    cv_folds: Folds
    target_precision: Probability
    threshold_holdout: float = Field(gt=0, le=0.5, description="share of the training images that choose the threshold")
    threshold_seed: Seed
    sgd: SGDParams
    dummy: DummyParams
    forest: ForestParams


class KNNParams(Params):
    n_neighbors: int = Field(ge=1, le=1_000)
    weights: Literal["uniform", "distance"]


class Augmentable(Params):
    """A multiclass model's option: train on its images plus copies shifted by one pixel each way (5x the data)."""

    augment_shifts: bool = False


class SVCParams(Augmentable):
    C: Positive
    gamma: Literal["scale", "auto"] | Positive
    pca_components: int | None = Field(default=None, ge=1, le=784)
    max_train_samples: SampleCount | None = None


class HogSVCParams(SVCParams):
    """Deskewing, histograms of oriented gradients beside the pixels, then PCA and the kernel SVC."""

    deskew: bool | Literal["auto"]  # auto: only if the dataset's images are handwriting (the registry says)
    orientations: int = Field(ge=1, le=36)
    pixels_per_cell: int = Field(ge=2, le=9)
    cells_per_block: int = Field(ge=1, le=7)
    keep_pixels: bool
    standardize: bool
    pca_components: int | None = Field(default=None, ge=1, le=10_000)
    random_state: Seed  # of the randomized PCA

    @model_validator(mode="after")
    def block_fits_the_image(self) -> HogSVCParams:
        if self.pixels_per_cell * self.cells_per_block > 28:
            raise ValueError("pixels_per_cell x cells_per_block must be at most 28: a block must fit in the image")
        return self


class MulticlassForestParams(ForestParams, Augmentable):
    pass


class MulticlassSGDParams(ScaledSGDParams, Augmentable):
    pass


class MulticlassKNNParams(KNNParams, Augmentable):
    pass


class MulticlassModels(Params):
    """`multiclass.models`: each entry a model that runs, as a stage of its own (`train_multiclass@<name>`)."""

    svc_hog: HogSVCParams | None = Field(default=None, description="HOG + pixels, PCA, SVC")
    svc_ovo: SVCParams | None = Field(default=None, description="SVC (one-vs-one)")
    svc_ovr: SVCParams | None = Field(default=None, description="one-vs-rest SVC")
    knn: MulticlassKNNParams | None = Field(default=None, description="k-nearest neighbours")
    forest: MulticlassForestParams | None = Field(default=None, description="random forest")
    sgd: MulticlassSGDParams | None = Field(default=None, description="SGD (one-vs-rest)")

    @model_validator(mode="after")
    def at_least_one(self) -> MulticlassModels:
        if not self.names():
            raise ValueError(f"enable at least one model of: {', '.join(MulticlassModels.model_fields)}")
        return self

    def names(self) -> list[str]:
        """The models that run, in the order above (the committed params.yaml's)."""
        return [name for name, entry in self if entry is not None]

    @staticmethod
    def describe(name: str) -> str:
        return MulticlassModels.model_fields[name].description or name


class MulticlassSharedParams(Params):
    """The `multiclass` keys every model's stage reads: the CV folds and subset, and the validation split."""

    cv_folds: Folds
    cv_max_samples: SampleCount | None = None
    validation_size: float = Field(gt=0, le=0.5, description="share of the training images that chooses the model")
    validation_seed: Seed


class MulticlassParams(MulticlassSharedParams):
    models: MulticlassModels


class DenoiseParams(Params):
    """The chapter's multioutput example: a KNN that maps noisy images to clean ones."""

    noise: NoiseAmplitude
    seed: Seed
    n_neighbors: int = Field(ge=1, le=1_000)
    max_train_samples: SampleCount | None = None


class MultilabelParams(Params):
    cv_folds: Folds
    cv_max_samples: SampleCount | None = None
    knn: KNNParams
    denoise: DenoiseParams


class AllParams(Params):
    """The whole of params.yaml: its sections and no other. `data` is checked by `download`, against the registry."""

    data: dict[str, Any]
    split: SplitParams
    binary: BinaryParams
    multiclass: MulticlassParams
    multilabel: MultilabelParams

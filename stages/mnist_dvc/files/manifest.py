"""The multiclass models' manifest: which models `evaluate` scored, the one it chose on the validation images, and
how many images chose it. `report` presents the models it names and the chosen one."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mnist_dvc.files.disk import read_json_model, write_json
from mnist_dvc.files.paths import MANIFEST_FILE
from mnist_dvc.study.schema import MulticlassModels


class Manifest(BaseModel):
    """`data/evaluation/manifest.json`."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    models: list[str] = Field(min_length=1)
    chosen: str
    validation_images: int = Field(ge=1)

    @model_validator(mode="after")
    def names_are_models(self) -> Manifest:
        unknown = [name for name in self.models if name not in MulticlassModels.model_fields]
        if unknown:
            raise ValueError(f"unknown models {unknown}, allowed: {', '.join(MulticlassModels.model_fields)}")
        if self.chosen not in self.models:
            raise ValueError(f"'chosen' should name one of the models, got {self.chosen!r}")
        return self


def read_manifest() -> Manifest:
    return read_json_model(MANIFEST_FILE, Manifest, "not what evaluate writes")


def write_manifest(manifest: Manifest) -> None:
    write_json(MANIFEST_FILE, manifest.model_dump())

"""What the pipeline's stages share, in layers: each folder imports only the layers beneath it.

    study      the machine learning: features, metrics, denoising, the params' shapes, the user's errors
    files      what passes between stages: image arrays, model files, curves, the manifest, paths, JSON and CSV
    runtime    how a stage runs: the numeric profile, params reading, progress lines, the memory check, the runner
    datasets   where the images come from: the registry, the IDX format, sources and the download
    parallel   where a stage's parallel work runs: worker threads, or a Dask cluster
    report     the figures and report.md

`dvc.yaml` lists, for each stage, its script and the folders of the layers it uses, so a change to one layer reruns
only the stages that use it (`tests/test_layers.py` keeps the imports one-way). Keep this file a docstring only: no
stage lists it.
"""

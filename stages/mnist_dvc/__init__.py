"""What the pipeline's stages share, one module per concern.

The stage scripts beside this package import its modules directly (`from mnist_dvc.files import ...`), and
`dvc.yaml` lists, for each stage, exactly the modules it imports, so a change to one concern reruns only the
stages that use it. Keep this file free of imports for that reason.
"""

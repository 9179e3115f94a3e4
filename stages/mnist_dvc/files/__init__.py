"""What passes between stages: image arrays, model files, curves, the manifest, paths, atomic JSON and CSV writes."""

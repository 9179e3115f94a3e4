"""The study itself: pure functions and scikit-learn estimators, knowing nothing of files, processes or workers.

The classes saved in model files live here (`features`), so a model file needs this layer only.
"""

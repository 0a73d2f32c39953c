"""Weights of the feature classifiers the sample-quality metric ships (see scripts/)."""

"""Evaluation of frozen encoders: feature extraction and the weighted kNN classifier."""

from moco.eval.features import extract_features
from moco.eval.knn import knn_predict, knn_top1

__all__ = ["extract_features", "knn_predict", "knn_top1"]

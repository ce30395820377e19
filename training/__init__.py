"""Offline training: data checks, preprocessing, RNN models, evaluation and the model store."""

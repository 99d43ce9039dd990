"""The trainer: datasets, the transfer-learning recipe, training, evaluation, retraining."""

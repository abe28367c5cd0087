"""Sample-quality measures: pure functions over samples and feature tensors.

    from unmix.metrics import evaluate
    evaluate(samples, "digits")          # {"fd", "kid", "precision", "recall", "n"}

(`unmix.evaluate(model)` samples a model first.)
"""
from unmix.metrics.distances import frechet_distance, kid, precision_recall
from unmix.metrics.exact import log_density_gap, sliced_w2
from unmix.metrics.quality import evaluate

__all__ = ["evaluate", "frechet_distance", "kid", "log_density_gap", "precision_recall", "sliced_w2"]

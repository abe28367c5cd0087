"""Sample-quality and likelihood measures.

    from unmix.metrics import evaluate, evaluate_checkpoint
    evaluate(samples, "digits")          # {"fd", "kid", "precision", "recall", "n"}
    evaluate_checkpoint("runs/digits")   # samples the checkpoint first
"""
from unmix.metrics.distances import frechet_distance, kid, precision_recall
from unmix.metrics.evaluate import evaluate, evaluate_checkpoint
from unmix.metrics.exact import log_density_gap, sliced_w2

__all__ = ["evaluate", "evaluate_checkpoint", "frechet_distance", "kid", "precision_recall", "sliced_w2",
           "log_density_gap"]

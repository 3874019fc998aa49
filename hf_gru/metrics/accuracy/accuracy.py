"""Accuracy: the fraction of predictions equal to their reference (scikit-learn's `accuracy_score`).

An offline `evaluate` metric module: load it with `evaluate.load("<path>/accuracy")` or `hf_gru.metrics.load_metric`.
"""

import datasets
import evaluate
from sklearn.metrics import accuracy_score

_DESCRIPTION = "Accuracy = (number of correct predictions) / (number of predictions)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted labels.
    references (`list[int]`): true labels.
    normalize (`bool`, defaults to True): if False, return the number of correct predictions instead of the fraction.
    sample_weight (`list[float]`, *optional*): per-example weights.
Returns:
    `{"accuracy": float}`.
Example:
    >>> metric.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    {'accuracy': 0.75}
"""


class Accuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html"],
        )

    def _compute(self, predictions, references, normalize: bool = True, sample_weight=None) -> dict:
        if len(predictions) == 0:
            raise ValueError("accuracy needs at least one prediction, got 0.")
        score = accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight)
        return {"accuracy": float(score)}

"""F1 score, the harmonic mean of precision and recall (scikit-learn's `f1_score`).

`average` picks binary (F1 of `pos_label`), macro (unweighted mean over classes), micro (from global counts),
weighted (mean weighted by class support) or None (one score per class).
An offline `evaluate` metric module: load it with `evaluate.load("<path>/f1")` or `hf_gru.metrics.load_metric`.
"""

import datasets
import evaluate
from sklearn.metrics import f1_score

AVERAGES = ("binary", "macro", "micro", "weighted", None)
_DESCRIPTION = "F1 = 2 * precision * recall / (precision + recall)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted labels.
    references (`list[int]`): true labels.
    average (`str` or None, defaults to "binary"): "binary", "macro", "micro", "weighted", or None (per class).
    pos_label (`int`, defaults to 1): the positive class when average="binary".
    labels (`list[int]`, *optional*): the classes to include (and their order when average=None).
    sample_weight (`list[float]`, *optional*): per-example weights.
    zero_division (`float` or "warn", defaults to 0.0): the value when precision or recall divide by zero.
Returns:
    `{"f1": float}`, or `{"f1": list[float]}` when average=None.
Example:
    >>> metric.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    {'f1': 0.6666666666666666}
"""


class F1(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

    def _compute(
        self,
        predictions,
        references,
        average: str | None = "binary",
        pos_label: int = 1,
        labels=None,
        sample_weight=None,
        zero_division: float | str = 0.0,
    ) -> dict:
        if average not in AVERAGES:
            raise ValueError(f"`average` must be one of {list(AVERAGES)}, got average={average!r}.")
        if len(predictions) == 0:
            raise ValueError("f1 needs at least one prediction, got 0.")
        # scikit-learn raises a ValueError naming the setting for multi-class data with average="binary".
        score = f1_score(
            references,
            predictions,
            labels=labels,
            pos_label=pos_label,
            average=average,
            sample_weight=sample_weight,
            zero_division=zero_division,
        )
        return {"f1": score.tolist() if average is None else float(score)}

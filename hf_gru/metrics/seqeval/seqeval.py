"""Entity-level precision, recall and F1 for sequence labelling (NER, chunking), wrapping the `seqeval` package.

An entity counts as correct only when its type and its whole span match (CoNLL-2000 evaluation). Tags follow a
scheme such as IOB2 (`B-PER`, `I-PER`, `O`).
An offline `evaluate` metric module: load it with `evaluate.load("<path>/seqeval")` or `hf_gru.metrics.load_metric`.
"""

import datasets
import evaluate
from seqeval.metrics import accuracy_score, classification_report

SCHEMES = ("IOB1", "IOB2", "IOE1", "IOE2", "IOBES", "BILOU")
_DESCRIPTION = "Entity-level precision / recall / F1 (CoNLL evaluation) and token accuracy, via seqeval."
_CITATION = """@misc{seqeval, title={seqeval: A Python framework for sequence labeling evaluation},
url={https://github.com/chakki-works/seqeval}, author={Hiroki Nakayama}, year={2018}}"""
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[str]]`): predicted tags, one list per sentence.
    references (`list[list[str]]`): true tags, same shapes.
    suffix (`bool`, defaults to False): tags are written `PER-B` rather than `B-PER`.
    scheme (`str`, *optional*): one of IOB1, IOB2, IOE1, IOE2, IOBES, BILOU; used with mode="strict".
    mode (`str`, *optional*): None (CoNLL's lenient chunking) or "strict" (needs `scheme`).
    sample_weight (`list[float]`, *optional*): per-sentence weights.
    zero_division (`int` or "warn", defaults to 0): the value when a ratio divides by zero.
Returns:
    `{"overall_precision", "overall_recall", "overall_f1", "overall_accuracy"}` (floats), plus one entry per entity
    type: `{"PER": {"precision", "recall", "f1", "number"}}`.
Example:
    >>> metric.compute(predictions=[["B-PER", "I-PER", "O"]], references=[["B-PER", "I-PER", "O"]])["overall_f1"]
    1.0
"""


class Seqeval(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
            homepage="https://github.com/chakki-works/seqeval",
        )

    def _compute(
        self,
        predictions,
        references,
        suffix: bool = False,
        scheme: str | None = None,
        mode: str | None = None,
        sample_weight=None,
        zero_division: int | str = 0,
    ) -> dict:
        if mode not in (None, "strict"):
            raise ValueError(f"`mode` must be None or 'strict', got mode={mode!r}.")
        if scheme is not None and scheme not in SCHEMES:
            raise ValueError(f"`scheme` must be one of {list(SCHEMES)} or None, got scheme={scheme!r}.")
        if mode == "strict" and scheme is None:
            raise ValueError("mode='strict' needs a `scheme` (e.g. 'IOB2'), got scheme=None.")
        for i, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
            if len(pred) != len(ref):
                raise ValueError(f"Sentence {i} has {len(pred)} predicted tags but {len(ref)} reference tags.")
        if scheme is not None:
            import seqeval.scheme

            scheme = getattr(seqeval.scheme, scheme)
        report = classification_report(
            y_true=references,
            y_pred=predictions,
            suffix=suffix,
            output_dict=True,
            scheme=scheme,
            mode=mode,
            sample_weight=sample_weight,
            zero_division=zero_division,
        )
        report.pop("macro avg")
        report.pop("weighted avg")
        overall = report.pop("micro avg")
        scores = {
            entity: {
                "precision": float(s["precision"]),
                "recall": float(s["recall"]),
                "f1": float(s["f1-score"]),
                "number": int(s["support"]),
            }
            for entity, s in report.items()
        }
        scores["overall_precision"] = float(overall["precision"])
        scores["overall_recall"] = float(overall["recall"])
        scores["overall_f1"] = float(overall["f1-score"])
        scores["overall_accuracy"] = float(accuracy_score(y_true=references, y_pred=predictions))
        return scores

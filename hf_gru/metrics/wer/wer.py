"""Word error rate, (substitutions + deletions + insertions) / reference words, over the whole corpus (jiwer).

An offline `evaluate` metric module: load it with `evaluate.load("<path>/wer")` or `hf_gru.metrics.load_metric`.
Returns a dict (unlike the Hub's `wer`, which returns a bare float) so it combines with other metrics.
"""

import datasets
import evaluate
import jiwer

_DESCRIPTION = "WER = (S + D + I) / N from a word-level Levenshtein alignment, summed over all sentences."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): transcriptions to score.
    references (`list[str]`): reference transcriptions (words split on whitespace).
    return_details (`bool`, defaults to False): also return the substitution, deletion, insertion and hit counts.
Returns:
    `{"wer": float}` (may exceed 1 with many insertions), plus the counts when `return_details`.
Example:
    >>> metric.compute(predictions=["the cat sit on"], references=["the cat sat"])
    {'wer': 0.6666666666666666}
"""


class WER(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            codebase_urls=["https://github.com/jitsi/jiwer"],
        )

    def _compute(self, predictions, references, return_details: bool = False) -> dict:
        if len(references) == 0:
            raise ValueError("wer needs at least one reference, got 0.")
        out = jiwer.process_words(list(references), list(predictions))
        scores = {"wer": float(out.wer)}
        if return_details:
            scores.update(substitutions=out.substitutions, deletions=out.deletions, insertions=out.insertions,
                          hits=out.hits)  # fmt: skip
        return scores

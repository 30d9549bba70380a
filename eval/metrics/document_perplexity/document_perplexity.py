"""Perplexity of whole documents per word and per byte, as lm-evaluation-harness aggregates `loglikelihood_rolling`.

Inputs, one entry per document: the summed log-likelihood (natural log) of the document's tokens, its word count
and its UTF-8 byte count (the harness counts both on the ORIGINAL text, before detokenisation).
Outputs (harness `weighted_perplexity` / `bits_per_byte` aggregations):
    word_perplexity = exp(-sum(loglikelihoods) / sum(words))
    byte_perplexity = exp(-sum(loglikelihoods) / sum(bytes))
    bits_per_byte   = -sum(loglikelihoods) / sum(bytes) / ln 2
"""

import math

import datasets
import evaluate

_DESCRIPTION = __doc__
_CITATION = """@software{eval-harness, author = {Gao, Leo and others}, title = {A framework for few-shot language model
evaluation}, publisher = {Zenodo}, url = {https://github.com/EleutherAI/lm-evaluation-harness}}"""
_KWARGS_DESCRIPTION = """
Args:
    loglikelihoods (list of float): summed natural-log likelihood of each document.
    words (list of int): words in each original document (`len(re.split(r"\\s+", page))`).
    bytes (list of int): UTF-8 bytes of each original document.
Returns:
    word_perplexity, byte_perplexity, bits_per_byte (floats).
Example:
    >>> metric = evaluate.load("eval/metrics/document_perplexity")
    >>> metric.compute(loglikelihoods=[-2.0, -4.0], words=[1, 2], bytes=[3, 3])["word_perplexity"]  # exp(6/3)
    7.38905609893065
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DocumentPerplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"loglikelihoods": datasets.Value("float64"), "words": datasets.Value("int64"),
                 "bytes": datasets.Value("int64")}
            ),
        )

    def _compute(self, loglikelihoods, words, bytes):
        if not loglikelihoods:
            raise ValueError("document_perplexity needs at least one document")
        total = math.fsum(loglikelihoods)
        per_byte = total / sum(bytes)
        return {
            "word_perplexity": math.exp(-total / sum(words)),
            "byte_perplexity": math.exp(-per_byte),
            "bits_per_byte": -per_byte / math.log(2),
        }

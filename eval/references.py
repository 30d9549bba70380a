"""Published OpenAI GPT-2 small (117M in the paper, 124M as counted today) numbers, the one copy in the repo.

`eval.evaluate` prints them next to a model's numbers and writes them into results.json (each task's
"references"); the model card reads them from there. Scale as results.json (accuracy as a fraction).

Sources. The paper (Radford et al. 2019, Table 3) scores LAMBADA by the full last WORD (with its own
detokenized data and a stop-word filter): 45.99 is therefore listed for `acc` with that caveat, never for
`acc_last_token`. Last-TOKEN accuracy of `gpt2` (46.67) is the number reported in huggingface/transformers#13761,
which measures exactly our `acc_last_token` (argmax of the target's last token).
"""

PAPER = "GPT-2 117M paper Table 3"
HARNESS_2159 = "gpt2 with lm-evaluation-harness, EleutherAI/lm-evaluation-harness#2159"
TRANSFORMERS_13761 = "user report in huggingface/transformers#13761"

# (task, metric) -> [(value, source label)]
REFERENCES = {
    ("wikitext", "word_perplexity"): [
        (29.41, f"{PAPER}, WikiText-2 (paper protocol)"),
        (37.50, f"{PAPER}, WikiText-103 (paper protocol)"),
        (37.37, f"gpt2 with lm-evaluation-harness, {TRANSFORMERS_13761}"),
    ],
    ("lambada_openai", "perplexity"): [
        (35.13, f"{PAPER} (paper protocol)"),
        (40.0554, HARNESS_2159),
    ],
    ("lambada_openai", "acc"): [
        (0.4599, f"{PAPER} (paper protocol: last word, not the harness's acc)"),
        (0.3256, HARNESS_2159),
    ],
    ("lambada_openai", "acc_last_token"): [
        (0.4667, f"gpt2 last-token accuracy, {TRANSFORMERS_13761}"),
    ],
}


def task_references(task: str, metrics) -> dict[str, list[dict]]:
    """{metric: [{"value", "source"}]} for the metrics of `task` that have published references (results.json)."""
    return {metric: [{"value": value, "source": source} for value, source in REFERENCES[(task, metric)]]
            for metric in metrics if (task, metric) in REFERENCES}

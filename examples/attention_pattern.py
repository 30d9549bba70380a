"""Plot one attention head's pattern on one prompt with TransformerLens (a hook-based analysis of a release).

    pip install -e ".[interp]"
    python examples/attention_pattern.py --model path/to/release --layer 0 --head 1 \
        --prompt "The cat sat on the mat because it was tired." --output attention_L0H1.png

Loads the release folder offline (`modeling.interp.load_transformer_lens`), runs the prompt with
`run_with_cache`, reads the hook `blocks.{layer}.attn.hook_pattern` (shape [batch, head, query, key]) and saves
the head's [query, key] matrix as a heatmap. TransformerLens prepends <|endoftext|> as the BOS token.
"""

from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser

from gpt2_owt.core.errors import UserError, cli_main
from gpt2_owt.modeling.interp import load_transformer_lens


@dataclass
class AttentionPatternArguments:
    model: str = field(metadata={"help": "a from_pretrained GPT-2 folder (a release, hf/final, a converted model)"})
    prompt: str = field(default="The cat sat on the mat because it was tired.")
    layer: int = field(default=0)
    head: int = field(default=0)
    output: str = field(default="attention_pattern.png", metadata={"help": "PNG to write"})


def attention_pattern(bridge, prompt: str, layer: int, head: int) -> tuple[list[str], torch.Tensor]:
    """(tokens, [query, key] attention probabilities) of one head, read from the hook `attn.hook_pattern`."""
    n_layers, n_heads = bridge.cfg.n_layers, bridge.cfg.n_heads
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise UserError(f"layer {layer} / head {head} out of range: the model has {n_layers} layers x {n_heads} heads")
    hook = f"blocks.{layer}.attn.hook_pattern"
    with torch.no_grad():
        _, cache = bridge.run_with_cache(prompt, names_filter=hook)
    return bridge.to_str_tokens(prompt), cache[hook][0, head].cpu()


def plot_pattern(tokens: list[str], pattern: torch.Tensor, title: str, output: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [repr(t)[1:-1] for t in tokens]  # show spaces and newlines
    size = 2 + 0.35 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(pattern.numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    plt.close(fig)


@cli_main
def main(argv: list[str] | None = None) -> torch.Tensor:
    (args,) = HfArgumentParser(AttentionPatternArguments).parse_args_into_dataclasses(args=argv)
    bridge = load_transformer_lens(args.model)
    tokens, pattern = attention_pattern(bridge, args.prompt, args.layer, args.head)
    plot_pattern(tokens, pattern, f"layer {args.layer}, head {args.head}", args.output)
    strongest = pattern[-1].argmax().item()
    print(f"wrote {args.output}; the last token {tokens[-1]!r} attends most to {tokens[strongest]!r} "
          f"({pattern[-1, strongest]:.2f})")
    return pattern


if __name__ == "__main__":
    main()

"""The trace explorer's query latency (tracing/explorer.py) on a run, against the commands its page shows.

    python benchmarks/bench_explore.py --run_dir RUN [--data_dir D] [--prompt "..."] [--repeats 5]

What the page's handlers call (tracing/explore_app.py adds only turning the answer into components), warm: the
checkpoints loaded once, the index open, as a page is after its first answer. Views timed (median of --repeats):
    generate + spans   `trace spans --prompt P --generate` at the last checkpoint; the generation itself (the
                       same greedy call, spans.generate) is timed apart and subtracted: the goal excludes it
    text spans         `trace spans --text T` (T: the generation's text)
    span exposures     a click on a span: `trace find --token_ids ...` of its ids
    curve              `trace curve --text SPAN` over every checkpoint
    data of update     `data-order --update U`
Goal: each < 1 s excluding generation. Baseline, in the same run: each view's command line as a fresh process (what
a user without the page runs, imports and model loading included): ratio = command / page.
"""

import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gpt2_owt.core.hf_argparser import HfArgumentParser
from gpt2_owt.tracing.explorer import Explorer

GPT2_OWT = str(Path(sys.executable).parent / "gpt2-owt")


@dataclass
class BenchArgs:
    run_dir: str
    data_dir: str | None = None
    prompt: str = "The United States"
    max_new_tokens: int = 32
    repeats: int = 5


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median seconds of `repeats` calls after one warm-up call, and the last answer."""
    answer = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        answer = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), answer


def command_seconds(line: str) -> float:
    start = time.perf_counter()
    done = subprocess.run([GPT2_OWT, *shlex.split(line)[1:]], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    return time.perf_counter() - start


def main() -> None:
    from gpt2_owt.tracing.spans import Decoding, generate
    from gpt2_owt.modeling.tokenizer import encode

    args = HfArgumentParser(BenchArgs).parse_args_into_dataclasses()[0]
    explorer = Explorer(args.run_dir, data_dir=args.data_dir)
    last = len(explorer.checkpoints) - 1
    model = explorer.model(explorer.checkpoint(last))
    rows = []

    gen_s, _ = timed(lambda: generate(model, encode(args.prompt), Decoding(args.max_new_tokens)), args.repeats)
    total_s, (report, line) = timed(lambda: explorer.spans(last, prompt=args.prompt,
                                                           max_new_tokens=args.max_new_tokens), args.repeats)
    rows.append(("generate + spans, generation excluded", total_s - gen_s, line))
    rows.append(("(the generation itself)", gen_s, None))
    text_s, (text_report, line) = timed(lambda: explorer.spans(last, text=report["text"]), args.repeats)
    rows.append(("text spans", text_s, line))
    found = report["spans"] or text_report["spans"]
    if found:
        source = report if report["spans"] else text_report
        k = max(range(len(found)), key=lambda i: found[i]["count"])
        click_s, (_, line) = timed(lambda: explorer.span_exposures(source, k), args.repeats)
        rows.append(("span exposures (a click)", click_s, line))
        curve_s, (_, line) = timed(lambda: explorer.curve(found[k]["text"]), args.repeats)
        rows.append((f"curve ({len(explorer.checkpoints)} checkpoints)", curve_s, line))
    order_s, (_, line) = timed(lambda: explorer.data_order(3), args.repeats)
    rows.append(("data of update 3", order_s, line))

    print(f"run {args.run_dir}: {len(explorer.checkpoints)} checkpoints; {platform.processor() or platform.machine()}, "
          f"{sys.version.split()[0]}; median of {args.repeats} warm calls")
    print(f"{'view':<40} {'page (s)':>9} {'command (s)':>12} {'ratio':>7}")
    for name, seconds, line in rows:
        if line is None:
            print(f"{name:<40} {seconds:>9.3f}")
            continue
        cold = command_seconds(line)
        print(f"{name:<40} {seconds:>9.3f} {cold:>12.2f} {cold / seconds:>7.0f}x   {'OK' if seconds < 1 else 'SLOW'}")


if __name__ == "__main__":
    main()

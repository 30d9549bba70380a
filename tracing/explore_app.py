"""The trace explorer's page (Gradio): the layout, and one handler per view that asks the `Explorer`
(tracing/explorer.py) and turns its answer into components. No tracing logic lives here.

Every handler returns the page's status line first: empty when the view answered, else the command line's own
`error: ...` line (a UserError's text); the view's outputs are then cleared, and the server keeps serving.
Element ids (for scripts and the browser test, tests/test_explore.py): status, checkpoint, checkpoint_label,
prompt, generate, generation, spans_table, span_documents, span_exposures, spans_command, curve_text,
curve_prefix, draw_curve, curve_loss_plot, curve_exposure_plot, curve_points, curve_command, update, show_update,
update_table, update_command, memorization_table, attribution_table.
"""

import functools
import itertools
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from gpt2_owt.core.errors import UserError

from .explorer import Explorer, command_line

TITLE = "gpt2-owt trace explorer"
CSS = ".body-cell .cell-wrap > * { white-space: pre-wrap; }"  # a document's newlines and spaces, as in its text


def gradio():
    try:
        import gradio as gr
    except ImportError:
        raise UserError("the explorer needs gradio: pip install 'gpt2-owt[explore]'") from None
    return gr


QUERIES = itertools.count(1)  # numbers every answer of this server, so a page (or a test) sees each one arrive


def answers(num_outputs: int):
    """Decorate a view handler returning its outputs: prepend the status line (empty, or a UserError's one line
    `error: ...`, exactly as the command line prints it, with the outputs cleared) and the timing line ("query N:
    VIEW in S s"). The handler's signature is kept (Gradio reads it for Progress / SelectData)."""

    def wrap(fn):
        @functools.wraps(fn)
        def handler(*args, **kwargs):
            start = time.perf_counter()
            try:
                outputs = fn(*args, **kwargs)
                outputs = outputs if num_outputs > 1 else (outputs,)
                line = ""
            except UserError as e:
                outputs, line = [None] * num_outputs, f"error: {e}"
            took = f"query {next(QUERIES)}: {fn.__name__.replace('_', ' ')} in {time.perf_counter() - start:.2f} s"
            return (line, took, *outputs)

        return handler

    return wrap


def curve_view(result: dict, line: str) -> tuple:
    """`trace curve --json` as two interactive plots (loss; exposures seen) and the table of their points."""
    import pandas as pd

    rows = result["rows"]
    losses = pd.DataFrame({"step": [r["step"] for r in rows], "loss": [r["loss"] for r in rows]})
    seen = None if any(r["exposures"] is None for r in rows) else pd.DataFrame(
        {"step": [r["step"] for r in rows], "exposures": [r["exposures"] for r in rows]})
    points = [[r["step"], r["checkpoint"], round(r["loss"], 6), round(r["logprob"], 6), blank(r["exposures"])]
              for r in rows]
    return losses, seen, points, line


def order_view(order: dict, line: str) -> tuple:
    """`data-order --json` as the batch's summary and one row per sequence."""
    summary = f"update {order['update']}: {order['global_batch_size']} sequences of {order['seq_len']} + 1 tokens " \
              f"(data_seed {order['data_seed']}, epoch {order['epoch']}); tokens sha256 {order['tokens_sha256']}"
    rows = [[s["index"], s["window"], f"{s['token_start']}-{s['token_end']}", ", ".join(map(str, s["documents"])),
             ", ".join(map(str, s["source_rows"])), s["text"]] for s in order["sequences"]]
    return summary, rows, line


def attribution_label(result: dict) -> str:
    q = result["query"]
    what = q["text"] if q.get("text") is not None else f"{q.get('prompt')} -> {q.get('completion')}"
    return f"{result['method']} at step {', '.join(map(str, result['steps']))}: {what!r}"[:120]


def attribution_rows(result: dict) -> tuple:
    """An `attribute --json` result: its query, its top sequences (those with their context) and its command."""
    summary = f"{attribution_label(result)}: {result['candidates']['count']} candidate sequences " \
              f"({result['candidates']['source']}); effect = predicted rise of the query's loss without the sequence"
    rows = [[s["rank"], s["effect"], s["update"], s["row"], ", ".join(map(str, s["documents"])),
             ", ".join(map(str, s["source_rows"])), s["context"]] for s in result["sequences"] if "context" in s]
    return summary, rows, command_line(result.get("command") or [])


CURVE_COLUMNS = ["step", "checkpoint", "loss", "logprob", "exposures"]
ORDER_COLUMNS = ["row", "window", "tokens", "documents", "source rows", "text"]
MEMORIZATION_KEYS = ["sequence", "update", "row", "document", "source_row", "memorized", "match_fraction",
                     "exposures", "last_exposure_update", "steps_since_last_exposure", "suffix_text", "generated_text"]
MEMORIZATION_COLUMNS = ["sequence", "update", "row", "document", "source row", "memorized", "match fraction",
                        "exposures", "last exposure update", "steps since", "suffix (training)", "greedy"]
ATTRIBUTION_COLUMNS = ["rank", "effect", "update", "row", "documents", "source rows", "context"]
SPAN_COLUMNS = ["span", "tokens", "text", "count", "exposures", "first update", "last update",
                "steps since last exposure"]
DOCUMENT_COLUMNS = ["document", "source row", "token", "exposures", "context"]
EXPOSURE_COLUMNS = ["document", "token", "epoch", "update", "row", "training loss"]


def segment_spans(report: dict) -> list[list[int]]:
    """The spans (0-based, text order) covering each segment of the highlighted text: the text cut at every span
    start and end (maximal spans may overlap)."""
    return [covering for _, covering in segments(report)]


def segments(report: dict) -> list[tuple[tuple[int, int], list[int]]]:
    ids, found = report["token_ids"], report["spans"]
    cuts = sorted({0, len(ids), *(s["start"] for s in found), *(s["end"] for s in found)})
    return [((a, b), [k for k, s in enumerate(found) if s["start"] <= a and b <= s["end"]])
            for a, b in zip(cuts, cuts[1:])]


def highlighted(report: dict) -> list[tuple[str, str | None]]:
    """(text, label) pieces for gr.HighlightedText: a span's label is its number (1-based), "2+3" where two overlap."""
    from gpt2_owt.modeling.tokenizer import decode

    return [(decode(report["token_ids"][a:b]), "+".join(str(k + 1) for k in covering) or None)
            for (a, b), covering in segments(report)]


def spans_view(report: dict, line: str) -> tuple:
    checkpoint = report["checkpoint"]
    at = f"{checkpoint['label']} (step {checkpoint['step']})" if checkpoint else "the run"
    if report["input"] == "generate":
        g = report["generation"]
        how = f"sampled with seed {g['seed']} (temperature {g['temperature']}, top_k {g['top_k']}, top_p " \
              f"{g['top_p']})" if g["do_sample"] else "greedy"
        summary = f"{at} continued {report['prompt']!r}: {report['num_tokens']} tokens, {how}"
    else:
        summary = f"the text: {report['num_tokens']} tokens"
    summary += f"; {report['num_maximal_spans']} maximal spans in train.bin, the {len(report['spans'])} rarest " \
               f"shown; exposures in updates < {report['until_step']}"
    rows = [[k + 1, f"{s['start']}-{s['end']}", s["text"], s["count"], s["exposures"], blank(s["first_update"]),
             blank(s["last_update"]), blank(s["steps_since_last_exposure"])] for k, s in enumerate(report["spans"])]
    return summary, highlighted(report), rows, line, report


def span_view(explorer: Explorer, report: dict | None, k: int) -> tuple:
    """Span k's documents (from the spans report) and the updates of its exposures (`trace find`)."""
    import html

    if report is None or not 0 <= k < len(report["spans"]):
        raise UserError("no span there: generate (or find the spans of a text) first")
    span = report["spans"][k]
    documents = []
    for d in span["documents"]:
        before, marked, after = explorer.marked_context(d, span)
        context = html.escape(before) + (f"<mark>{html.escape(marked)}</mark>" if marked else "") + html.escape(after)
        documents.append([d["document"], d["source_row"], d["token_position"], d["exposures"], context])
    title = f"span {k + 1} {span['text']!r}: {span['count']} occurrences, {span['exposures']} exposures in updates " \
            f"< {report['until_step']} (first update {blank(span['first_update'])}, last update " \
            f"{blank(span['last_update'])}, steps since the last {blank(span['steps_since_last_exposure'])})"
    if explorer.run_dir is None:  # a release: `trace find` needs the run folder for the updates
        return title, documents, [], ""
    found, line = explorer.span_exposures(report, k)
    exposures = [[o["document"], o["token_position"], e["epoch"], e["update"], e["row"], blank(e.get("loss"))]
                 for o in found["occurrences"] for e in o["exposures"]]
    return title, documents, exposures, line


def blank(value):
    """A missing number as an empty cell."""
    return "" if value is None else value


@dataclass
class Page:
    """What every tab shares: the explorer, the status line every answer writes first, the checkpoint slider."""
    gr: Any
    explorer: Explorer
    lines: list  # [status, timing]: every answer's first two outputs
    checkpoint: Any


def build_app(explorer: Explorer):
    """The page over one explorer: a header, then one function per tab (its layout, its handlers and what triggers
    them). Nothing here loads a model: the first view that needs one does."""
    gr = gradio()
    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        page = header(gr, explorer)
        with gr.Tabs() as tabs:
            spans = spans_tab(page)
            curve = curve_tab(page)
            update_tab(page)
            memorization_tab(page)
            attribution_tab(page, app)
        # a span leads to its learning curve: a click fills the curve tab's text, the button opens and draws it
        for source in (spans.generation, spans.table):
            source.select(spans.select, spans.report, [*page.lines, *spans.selected, curve.text, curve.prefix])
        spans.curve_button.click(lambda: gr.Tabs(selected="curve"), None, tabs).then(curve.draw, curve.inputs,
                                                                                      curve.outputs)
    return app


def header(gr, explorer: Explorer) -> Page:
    last = len(explorer.checkpoints) - 1
    gr.Markdown(f"## {TITLE}: `{explorer.source}`\n" + describe_data(explorer))
    with gr.Row():
        status = gr.Textbox(label="status", elem_id="status", interactive=False, max_lines=1, scale=3)
        timing = gr.Textbox(label="last answer", elem_id="timing", interactive=False, max_lines=1, scale=1)
    with gr.Row():
        checkpoint = gr.Slider(0, last, value=last, step=1, label="checkpoint (position in the exported steps)",
                               elem_id="checkpoint", scale=3)
        checkpoint_label = gr.Textbox(explorer.checkpoint_label(last), label="weights of", interactive=False,
                                      elem_id="checkpoint_label", scale=2)
    checkpoint.change(lambda p: explorer.checkpoint_label(p), checkpoint, checkpoint_label, show_progress="hidden")
    return Page(gr, explorer, [status, timing], checkpoint)


def spans_tab(page: Page) -> SimpleNamespace:
    """Generate (or take a text), find its spans in train.bin; a click on a span shows its documents and exposures.
    Returns what the page wires to the curve tab: the span click's handler, its sources and outputs."""
    gr, explorer = page.gr, page.explorer
    with gr.Tab("Generate and trace", id="spans"):
        with gr.Row():
            prompt = gr.Textbox(label="prompt", elem_id="prompt", scale=4)
            max_new_tokens = gr.Number(32, label="new tokens", precision=0, minimum=1, elem_id="max_new_tokens",
                                       scale=1)
            decoding = gr.Radio(["greedy", "sampled"], value="greedy", label="decoding", elem_id="decoding", scale=1)
            seed = gr.Number(0, label="seed (sampled)", precision=0, elem_id="seed", scale=1)
        with gr.Row():
            generate = gr.Button("generate and find its spans in the training data", variant="primary",
                                 elem_id="generate", scale=3)
            trace_text = gr.Textbox(label="... or find the spans of a text", elem_id="trace_text", scale=3)
            trace_button = gr.Button("find its spans", elem_id="trace_text_button", scale=1)
        summary = gr.Textbox(label="what was searched", elem_id="spans_summary", interactive=False, max_lines=2)
        generation = gr.HighlightedText(label="spans found verbatim in train.bin (click one)", elem_id="generation",
                                        show_legend=False, combine_adjacent=False)
        spans_table = gr.Dataframe(headers=SPAN_COLUMNS, label="spans (click a row)", elem_id="spans_table",
                                   interactive=False, wrap=True)
        spans_command = command_box("spans_command")
        with gr.Row():
            span_title = gr.Textbox(label="selected span", elem_id="span_title", interactive=False, max_lines=2,
                                    scale=4)
            span_curve = gr.Button("its learning curve", elem_id="span_curve", scale=1)
        span_documents = gr.Dataframe(headers=DOCUMENT_COLUMNS, label="its documents (the span marked)",
                                      elem_id="span_documents", interactive=False, wrap=True,
                                      datatype=["number", "number", "number", "number", "html"])
        span_exposures = gr.Dataframe(headers=EXPOSURE_COLUMNS, elem_id="span_exposures", interactive=False,
                                      label="its exposures: every update that fed a sequence holding it whole (the "
                                            "first 10 occurrences)")
        span_command = command_box("span_command")
        report = gr.State(None)  # the last `trace spans` report: what a click on a span reads
    spans_outputs = [summary, generation, spans_table, spans_command, report]

    @answers(len(spans_outputs))
    def generate_spans(position, prompt, max_new_tokens, decoding, seed, progress=gr.Progress(track_tqdm=True)):
        found, line = explorer.spans(position, prompt=prompt, max_new_tokens=max_new_tokens or 0,
                                     do_sample=decoding == "sampled", seed=seed or 0)
        return spans_view(found, line)

    @answers(len(spans_outputs))
    def text_spans(position, text, progress=gr.Progress(track_tqdm=True)):
        return spans_view(*explorer.spans(position, text=text))

    selected = [span_title, span_documents, span_exposures, span_command]

    @answers(len(selected) + 2)
    def select_span(found, evt: gr.SelectData):
        """A click on a highlighted segment (the first span covering it) or on a row of the spans table; the last
        two outputs fill the curve tab (the span's text, no prefix)."""
        if found is None:
            raise UserError("no span there: generate (or find the spans of a text) first")
        k = segment_spans(found)[evt.index][0] if evt.target is generation and segment_spans(found)[evt.index] \
            else evt.index[0] if evt.target is spans_table else None
        if k is None:
            raise UserError("that part of the text is in no span: click a highlighted one")
        return *span_view(explorer, found, k), found["spans"][k]["text"], ""

    generating = [page.checkpoint, prompt, max_new_tokens, decoding, seed]
    generate.click(generate_spans, generating, [*page.lines, *spans_outputs])
    prompt.submit(generate_spans, generating, [*page.lines, *spans_outputs])
    trace_button.click(text_spans, [page.checkpoint, trace_text], [*page.lines, *spans_outputs])
    return SimpleNamespace(select=select_span, generation=generation, table=spans_table, report=report,
                           selected=selected, curve_button=span_curve)


def curve_tab(page: Page) -> SimpleNamespace:
    """A text's loss at every checkpoint next to its exposures. Returns its inputs, handler and outputs (a span's
    button draws it too)."""
    gr, explorer = page.gr, page.explorer
    with gr.Tab("Learning curve", id="curve"):
        with gr.Row():
            curve_text = gr.Textbox(label="text", elem_id="curve_text", scale=3)
            curve_prefix = gr.Textbox(label="prefix (optional: score the text after it)", elem_id="curve_prefix",
                                      scale=2)
        draw = gr.Button("draw its curve over every checkpoint", variant="primary", elem_id="draw_curve")
        with gr.Row():
            loss_plot = gr.LinePlot(x="step", y="loss", title="loss of the text (nats per token)",
                                    elem_id="curve_loss_plot", tooltip="all")
            exposure_plot = gr.LinePlot(x="step", y="exposures", elem_id="curve_exposure_plot",
                                        title="exposures seen before the step (updates < step)", tooltip="all")
        points = gr.Dataframe(headers=CURVE_COLUMNS, label="points", elem_id="curve_points", interactive=False)
        curve_command = command_box("curve_command")
    curve_outputs = [loss_plot, exposure_plot, points, curve_command]

    @answers(len(curve_outputs))
    def draw_curve(text, prefix, progress=gr.Progress()):
        # progress by checkpoint, not track_tqdm: Gradio's tqdm tracking breaks on the Hub download bars that
        # open inside `trace curve`'s loop over checkpoints (TypeError in gradio/helpers.py, gradio 6.31)
        def scoring(k, n, checkpoint):
            progress((k, n), desc=f"score {checkpoint.label}", unit="checkpoint")

        return curve_view(*explorer.curve(text, prefix, on_checkpoint=scoring))

    inputs, outputs = [curve_text, curve_prefix], [*page.lines, *curve_outputs]
    draw.click(draw_curve, inputs, outputs)
    return SimpleNamespace(text=curve_text, prefix=curve_prefix, draw=draw_curve, inputs=inputs, outputs=outputs)


def update_tab(page: Page) -> None:
    """The global batch of one update: its sequences, documents and text (`gpt2-owt data-order`)."""
    gr, explorer = page.gr, page.explorer
    with gr.Tab("Data of update N", id="update"):
        with gr.Row():
            update = gr.Number(0, label="update (0-based: it turns step N into N + 1)", precision=0,
                               elem_id="update", minimum=0)
            show = gr.Button("show its global batch", variant="primary", elem_id="show_update")
        update_summary = gr.Textbox(label="the batch", elem_id="update_summary", interactive=False)
        update_table = gr.Dataframe(headers=ORDER_COLUMNS, label="sequences of the global batch",
                                    elem_id="update_table", interactive=False, wrap=True)
        update_command = command_box("update_command")

    @answers(3)
    def show_update(n):
        if n is None:
            raise UserError("give an update number")
        return order_view(*explorer.data_order(int(n)))

    show.click(show_update, update, [*page.lines, update_summary, update_table, update_command])


def memorization_tab(page: Page) -> None:
    """`trace memorization`'s rows at the slider's checkpoint (shown only with --memorization_dir)."""
    gr, explorer = page.gr, page.explorer
    with gr.Tab("Memorization", id="memorization", visible=bool(explorer.memorization_dir)):
        show_memorization = gr.Button("show the sequences checked at this checkpoint", variant="primary",
                                      elem_id="show_memorization")
        memorization_summary = gr.Textbox(label="at this checkpoint", elem_id="memorization_summary",
                                          interactive=False)
        memorization_table = gr.Dataframe(headers=MEMORIZATION_COLUMNS, elem_id="memorization_table",
                                          label="training sequences (memorized first)", interactive=False, wrap=True)
        memorization_command = command_box("memorization_command", "the command that made these rows")

    @answers(3)
    def memorization_view(position):
        rows, info, line = explorer.memorization(position)
        memorized = sum(bool(r["memorized"]) for r in rows)
        return (f"{memorized} of {len(rows)} sequences memorized at step {rows[0]['step']} (greedy from "
                f"{len(rows[0]['prefix_ids'])} tokens reproduces the next {len(rows[0]['suffix_ids'])})",
                [[r[c] for c in MEMORIZATION_KEYS] for r in rows], line)

    show_memorization.click(memorization_view, page.checkpoint,
                            [*page.lines, memorization_summary, memorization_table, memorization_command])


def attribution_tab(page: Page, app) -> None:
    """The `attribute --json` results given with --attribution, one at a time (shown only when there are some)."""
    gr, explorer = page.gr, page.explorer
    results = explorer.attributions()
    with gr.Tab("Attribution", id="attribution", visible=bool(results)):
        attribution_choice = gr.Dropdown([(attribution_label(r), k) for k, r in enumerate(results)],
                                         value=0 if results else None, label="attribution result",
                                         elem_id="attribution_choice")
        attribution_summary = gr.Textbox(label="query", elem_id="attribution_summary", interactive=False)
        attribution_table = gr.Dataframe(headers=ATTRIBUTION_COLUMNS, elem_id="attribution_table",
                                         label="training sequences by predicted effect", interactive=False, wrap=True)
        attribution_command = command_box("attribution_command", "the command that made this table")

    @answers(3)
    def attribution_view(k):
        if k is None:
            raise UserError("no attribution result chosen")
        return attribution_rows(explorer.attributions()[int(k)])

    outputs = [*page.lines, attribution_summary, attribution_table, attribution_command]
    attribution_choice.change(attribution_view, attribution_choice, outputs)
    if results:
        app.load(attribution_view, attribution_choice, outputs)


def command_box(elem_id: str, label: str = "the command that prints this answer (JSON)"):
    """The exact command line of a view (copy it into a shell)."""
    return gradio().Textbox(label=label, elem_id=elem_id, interactive=False, max_lines=3, buttons=["copy"])


def describe_data(explorer: Explorer) -> str:
    steps = ", ".join(str(c.step) for c in explorer.checkpoints)
    data = f"data `{explorer.data_dir}`" if explorer.data_dir else "no data folder (give --data_dir for spans)"
    return f"{len(explorer.checkpoints)} checkpoints (steps {steps}); {data}"


def launch(app, host: str | None, port: int | None, share: bool) -> None:
    """Serve until interrupted (host/port None: Gradio's GRADIO_SERVER_NAME / _PORT, as on a Space). A port already
    taken is one line."""
    try:
        app.queue().launch(server_name=host, server_port=port, share=share, ssr_mode=False, show_error=False,
                           footer_links=["gradio"], css=CSS)
    except OSError as e:
        raise UserError(f"cannot serve on {host}:{port}: {e}") from None

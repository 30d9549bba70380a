"""`gpt2-owt explore`: the trace explorer, a web page over one training run (or one published release) that answers
every question of `gpt2-owt trace` by clicking instead of reading JSON.

    gpt2-owt explore --run_dir R [--data_dir D] [--port 7860]          # a run folder (+ its data and trace index)
    gpt2-owt explore --repo_id USER/NAME [--data_dir D]                # a release on the Hub: its stepN branches

It serves a Gradio app on 127.0.0.1 (another address only with `--host`, never on a public link unless
`--share true`), and prints a line per start-up phase until it serves. Views:
  - a checkpoint slider over the exported steps (RUN/hf/stepN and hf/final, or the release's stepN branches and
    main); a prompt; generate (greedy, or sampled with the seed shown);
  - the generation with the spans found verbatim in the training data highlighted (`trace spans`); clicking a span
    lists its documents (source row, context with the span marked) and its exposures before the checkpoint;
  - the learning curve of the selected span or any typed text over every checkpoint, exposures marked
    (`trace curve`);
  - "data of update N": the sequences and documents of one global batch (`data-order`);
  - the `trace memorization` and `attribute` results of the run, when given (--memorization_dir, --attribution).
Every view is answered by the Python API of the command it names, and shows that command's exact line, so the
page never holds a second implementation: copy the line into a shell and the same answer comes back as JSON. A bad
input shows the command's one `error: ...` line and the server keeps serving. Nothing loads a model until a view
needs one; loaded checkpoints are kept (up to --model_cache_gb) so the curve and later queries do not reload them.

The Hub Space of a release is this app on `--repo_id` (tracing/space/app.py, added by `gpt2-owt card --with_space`). The engine is
tracing/explorer.py, the page tracing/explore_app.py.
Needs the `explore` extra (gradio): pip install 'gpt2-owt[explore]'.
"""

import socket
from dataclasses import dataclass, field

from gpt2_owt.core.args import parse
from gpt2_owt.core.errors import UserError, cli_main

from .explore_app import build_app, launch
from .explorer import Explorer

DEFAULT_PORT = 7860
LOCALHOST = "127.0.0.1"


@dataclass
class ExploreArgs:
    run_dir: str | None = field(default=None, metadata={"help": "a run folder: its hf/stepN exports and recipe"})
    repo_id: str | None = field(default=None, metadata={"help": "a published release: its stepN branches and main"})
    data_dir: str | None = field(default=None, metadata={
        "help": "prepared data folder with its trace index (default: the run's data_dir; with --repo_id, none: "
                "spans, exposures and the data order need it)"})
    memorization_dir: str | None = field(default=None, metadata={
        "help": "output folder of `gpt2-owt trace memorization` for this run (its table per checkpoint)"})
    attribution: list[str] | None = field(default=None, metadata={
        "help": "`gpt2-owt attribute --json` outputs for this run (their tables)"})
    host: str = field(default=LOCALHOST, metadata={
        "help": "address to serve on: 127.0.0.1 (this machine only) unless you choose to expose the page, e.g. "
                "0.0.0.0 (every interface: anyone who reaches the machine can use it)"})
    port: int = field(default=DEFAULT_PORT, metadata={"help": "port on --host", "gt": 0, "lt": 65536})
    share: bool = field(default=False, metadata={"help": "also serve through a public gradio.live link"})
    model_cache_gb: float = field(default=4.0, metadata={"help": "memory for loaded checkpoints (GiB)", "gt": 0})


def check_port_free(host: str, port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except socket.gaierror:  # a name that resolves to nothing: no port could help
            raise UserError(f"--host {host} is not an address of this machine (127.0.0.1 serves this machine "
                            "only)") from None
        except OSError as e:
            raise UserError(f"cannot serve on {host}:{port}: {e.strerror} (another server? pick another --port)") \
                from None


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = parse(ExploreArgs, argv, "explore")
    if (args.run_dir is None) == (args.repo_id is None):
        raise UserError("give exactly one of --run_dir and --repo_id")
    check_port_free(args.host, args.port)  # before any slow import or check
    # Start-up takes a while on a loaded machine (gradio and torch imports, the run's files): say what it is doing,
    # so a page that does not answer yet is visibly on its way, not hung.
    progress(f"reading {args.run_dir or args.repo_id} (checkpoints, recipe, data)")
    explorer = Explorer(args.run_dir, args.repo_id, args.data_dir, args.memorization_dir, args.attribution,
                        args.model_cache_gb)
    progress(f"{len(explorer.checkpoints)} checkpoints; loading the web framework (gradio)")
    progress("building the page")
    app = build_app(explorer)
    progress(f"serving on http://{args.host}:{args.port}/" + ("" if args.host == LOCALHOST else
                                                             " (reachable from other machines: --host)"))
    launch(app, args.host, args.port, args.share)


def progress(line: str) -> None:
    print(f"explore: {line}", flush=True)


if __name__ == "__main__":
    main()

"""`gpt2-owt explore`: the trace explorer in a real browser. Debian's chromium, driven by playwright (never a browser
download), opens the page the test serves on 127.0.0.1 for a tiny run with a trace index, and every answer the page
shows is checked against the command line the page itself prints under it: the highlighted spans, their documents
and exposures against `gpt2-owt trace spans --json` / `trace find --json`, the curve's points against
`gpt2-owt trace curve --json`, the data of an update against `gpt2-owt data-order --json`. Bad input in the page is
the command line's own one error line, and the server keeps answering after it. Screenshots go to the test's tmp
folder and, when GPT2_OWT_ARTIFACTS is set, there too.

Without chromium (`make test` installs Debian's when apt-get can) or gradio/playwright the browser tests skip with
the reason; GPT2_OWT_REQUIRE_BROWSER=1 (set by .ci/run) turns that skip into a failure.
"""

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers.training import LONG_RUN as RUN, cli_env, free_port

pytestmark = pytest.mark.browser

GPT2_OWT = str(Path(sys.executable).parent / "gpt2-owt")
SERVER_START_S = 300  # gradio + torch imports on a shared 2-core machine
ANSWER_S = 300  # the first answer also imports torch and loads a checkpoint
PROMPT_WORDS = 6  # the prompt: the first words of a training document, so its text occurs in the data


def require(condition: bool, reason: str) -> None:
    if not condition:
        if os.environ.get("GPT2_OWT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason} (GPT2_OWT_REQUIRE_BROWSER=1: the browser test must run here)")
        pytest.skip(reason)


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    require(found is not None, "no chromium on PATH (Debian: apt-get install chromium; `make test` installs it)")
    for module in ("playwright", "gradio"):
        try:
            __import__(module)
        except ImportError:
            require(False, f"{module} is not installed (pip install -e '.[test,explore]')")
    return found


# ---------------------------------------------------------------------------------------------------- the server

@contextlib.contextmanager
def serving(log: Path, command: list[str], port: int, env: dict):
    """Start a server command in its own process group; its URL once it answers on 127.0.0.1:port. The whole group
    is always stopped (SIGTERM, then SIGKILL)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            assert proc.poll() is None, f"the server exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the server did not answer in {SERVER_START_S} s"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(1)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def explorer_server(log: Path, *flags: str):
    """`gpt2-owt explore FLAGS` on a free port."""
    port = free_port()
    return serving(log, [GPT2_OWT, "explore", *flags, "--port", str(port)], port,
                   cli_env(GRADIO_ANALYTICS_ENABLED="False"))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless chromium with a fresh profile, no background traffic."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=executable, headless=True,
            viewport={"width": 1280, "height": 1600},
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"])
        try:
            yield context
        finally:
            context.close()


class ExplorerPage:
    """The page as a person uses it (type, click, read), by the element ids tracing/explore_app.py documents."""

    def __init__(self, context, url: str, shots: Path):
        self.page, self.shots = context.new_page(), shots
        self.page.goto(url)
        self.page.locator("#timing").wait_for(timeout=60_000)

    def value(self, elem_id: str) -> str:
        return self.page.locator(f"#{elem_id} [data-testid=textbox]").input_value()

    def fill(self, elem_id: str, text: str) -> None:
        self.page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(text)

    def answer(self, act) -> str:
        """Do `act` (a click, a key), wait for the server's next answer; its status line ('' or 'error: ...')."""
        before = self.value("timing")
        act()
        self.page.wait_for_function(
            "([before]) => document.querySelector('#timing [data-testid=textbox]').value !== before", arg=[before],
            timeout=ANSWER_S * 1000)
        return self.value("status")

    def click(self, elem_id: str) -> str:
        return self.answer(lambda: self.page.locator(f"#{elem_id}").click())

    def set_checkpoint(self, position: int, step: int) -> None:
        """Move the slider to `position`; wait for the server's label of it ("step N (...")."""
        box = self.page.locator("#checkpoint input[type=number]")
        box.fill(str(position))
        box.press("Enter")
        self.page.wait_for_function(
            "([p, label]) => document.querySelector('#checkpoint input[type=range]').value == p && "
            "document.querySelector('#checkpoint_label [data-testid=textbox]').value.startsWith(label)",
            arg=[str(position), f"step {step} ("], timeout=ANSWER_S * 1000)

    def rows(self, elem_id: str):
        return self.page.locator(f"#{elem_id} .virtual-row")

    def table(self, elem_id: str) -> list[list[str]]:
        """Every row of a gr.Dataframe as shown: each cell's text exactly (its content element's text)."""
        rows = self.rows(elem_id)
        return [rows.nth(i).locator("[role=gridcell] .cell-wrap > :first-child").all_text_contents()
                for i in range(rows.count())]

    def highlighted(self, elem_id: str) -> list[tuple[str, str | None]]:
        """(text, label) of every piece of a gr.HighlightedText, as shown."""
        pieces = []
        for token in self.page.locator(f"#{elem_id} .token").all():
            label = token.locator(".label")
            pieces.append((token.locator(".text").text_content(), label.text_content() if label.count() else None))
        return pieces

    def screenshot(self, name: str) -> None:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        if os.environ.get("GPT2_OWT_ARTIFACTS"):
            target = Path(os.environ["GPT2_OWT_ARTIFACTS"]) / "explorer"
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target / path.name)


def run_shown(line: str, env: dict | None = None) -> dict:
    """Run a command line exactly as the page shows it; its JSON."""
    argv = shlex.split(line)
    assert argv[0] == "gpt2-owt" and argv[-1] == "--json", line
    done = subprocess.run([GPT2_OWT, *argv[1:]], env=env or cli_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (line, done.stderr[-3000:])
    return json.loads(done.stdout)


def error_line(argv: list[str]) -> str:
    """The one error line a command prints for a bad input."""
    done = subprocess.run([GPT2_OWT, *argv], env=cli_env(), capture_output=True, text=True, timeout=600)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2 and len(errors) == 1, (argv, done.stderr[-3000:])
    return errors[0]


def blank(value) -> str:
    return "" if value is None else str(value)


# ---------------------------------------------------------------------------------------------------- the tests

@pytest.fixture(scope="module")
def run(trained_run, tmp_path_factory) -> Path:
    """A copy of the tiny run (the bad-input test removes one of its exports)."""
    return Path(shutil.copytree(trained_run(**RUN), tmp_path_factory.mktemp("explore") / "run"))


@pytest.fixture(scope="module")
def prompt(indexed_data_dir) -> str:
    from gpt2_owt.training.data_dir import open_split
    from gpt2_owt.modeling.tokenizer import decode

    split = open_split(indexed_data_dir, "train")
    first = split.tokens[: 64]
    return " ".join(decode(first).split()[:PROMPT_WORDS])


def check_spans(page: ExplorerPage, report: dict) -> None:
    """The highlighted text, the spans table, and each span's documents and exposures equal the command's report."""
    from gpt2_owt.modeling.tokenizer import decode

    ids, shown = report["token_ids"], page.highlighted("generation")
    assert "".join(text for text, _ in shown) == decode(ids)
    for k, span in enumerate(report["spans"], 1):  # the pieces labelled with span k make up exactly its text
        assert "".join(text for text, label in shown if label and str(k) in label.split("+")) == span["text"]
    chars = [(len(decode(ids[: s["start"]])), len(decode(ids[: s["end"]]))) for s in report["spans"]]
    at = 0
    for text, label in shown:  # each piece is labelled with exactly the spans covering it (maximal spans overlap)
        assert (label.split("+") if label else []) == [str(k) for k, (a, b) in enumerate(chars, 1)
                                                       if a <= at and at + len(text) <= b]
        at += len(text)
    assert page.table("spans_table") == [
        [str(k), f"{s['start']}-{s['end']}", s["text"], str(s["count"]), str(s["exposures"]),
         blank(s["first_update"]), blank(s["last_update"]), blank(s["steps_since_last_exposure"])]
        for k, s in enumerate(report["spans"], 1)]
    rows = page.rows("spans_table")
    for k, span in enumerate(report["spans"]):
        assert page.answer(lambda: rows.nth(k).locator("[role=gridcell]").nth(2).click()) == ""
        assert page.value("span_title").startswith(f"span {k + 1} {span['text']!r}: {span['count']} occurrences, "
                                                   f"{span['exposures']} exposures in updates < "
                                                   f"{report['until_step']}")
        assert page.table("span_documents") == [
            [str(d["document"]), str(d["source_row"]), str(d["token_position"]), str(d["exposures"]),
             d["context"]] for d in span["documents"]]
        found = run_shown(page.value("span_command"))  # `trace find --json` of the span's ids, updates < N
        assert found["token_ids"] == span["token_ids"] and found["until_step"] == report["until_step"]
        assert (found["num_exposures"], found["first_update"]) == (span["exposures"], span["first_update"])
        assert page.table("span_exposures") == [
            [str(o["document"]), str(o["token_position"]), str(e["epoch"]), str(e["update"]), str(e["row"]),
             blank(e.get("loss"))] for o in found["occurrences"] for e in o["exposures"]]


@pytest.mark.timeout(1800)
def test_page_answers_equal_the_commands(browser, run, indexed_data_dir, prompt, tmp_path):
    with explorer_server(tmp_path / "server.log", "--run_dir", str(run), "--data_dir", str(indexed_data_dir)) as url:
        page = ExplorerPage(browser, url, tmp_path)
        page.screenshot("1-loaded")  # no model loaded yet: the page comes up before any checkpoint is chosen

        # a greedy generation of the final checkpoint, its spans in the training data
        page.fill("prompt", prompt)
        assert page.click("generate") == ""
        report = run_shown(page.value("spans_command"))
        assert report["input"] == "generate" and report["checkpoint"]["step"] == RUN["max_steps"]
        assert report["prompt"] == prompt and report["generation"]["do_sample"] is False
        assert report["spans"], "the tiny run's generation has no span in its training data"
        page.screenshot("2-generation-spans")
        check_spans(page, report)
        page.screenshot("3-span-documents-exposures")

        # the spans of a training text at an earlier checkpoint: exposures before that step only
        page.set_checkpoint(1, step=1)  # positions 0, 1, 2, 3: steps 0, 1, 2 and hf/final (step 30)
        page.fill("trace_text", prompt)
        assert page.click("trace_text_button") == ""
        report = run_shown(page.value("spans_command"))
        assert report["input"] == "text" and report["until_step"] == 1 and "--checkpoint step1" in \
            page.value("spans_command")
        check_spans(page, report)

        # the last span's learning curve over every checkpoint
        assert page.click("span_curve") == ""
        assert page.value("curve_text") == report["spans"][-1]["text"] and page.value("curve_prefix") == ""
        curve = run_shown(page.value("curve_command"))
        assert curve["text"] == report["spans"][-1]["text"] and [r["step"] for r in curve["rows"]] == [0, 1, 2, 30]
        assert page.table("curve_points") == [
            [str(r["step"]), r["checkpoint"], str(round(r["loss"], 6)), str(round(r["logprob"], 6)),
             blank(r["exposures"])] for r in curve["rows"]]
        assert all(r["exposures"] is not None for r in curve["rows"])
        page.screenshot("4-curve")

        # the data of one update
        page.page.get_by_role("tab", name="Data of update N").click()
        page.fill("update", "3")
        assert page.click("show_update") == ""
        order = run_shown(page.value("update_command"))
        assert order["update"] == 3 and page.table("update_table") == [
            [str(s["index"]), str(s["window"]), f"{s['token_start']}-{s['token_end']}",
             ", ".join(map(str, s["documents"])), ", ".join(map(str, s["source_rows"])), s["text"]]
            for s in order["sequences"]]
        page.screenshot("5-data-of-update")

        # bad input: the command line's one error line, then the server answers again
        page.page.get_by_role("tab", name="Generate and trace").click()
        page.fill("prompt", "")
        assert page.click("generate") == "error: the prompt is empty: type the text the checkpoint should continue"
        shutil.rmtree(run / "hf" / "step1")  # a checkpoint that vanished while the page was open
        page.set_checkpoint(1, step=1)
        page.fill("prompt", prompt)
        shown = page.click("generate")
        assert shown == error_line(["trace", "spans", "--run_dir", str(run), "--checkpoint", "step1",
                                    "--data_dir", str(indexed_data_dir), "--prompt", prompt, "--generate"])
        page.screenshot("6-error")
        page.set_checkpoint(0, step=0)
        assert page.click("generate") == ""  # still serving


@pytest.mark.timeout(1800)
def test_saved_memorization_and_attribution_tables_equal_their_files(browser, trained_run, indexed_data_dir, prompt,
                                                                     tmp_path):
    """The Memorization and Attribution tabs show what `trace memorization` and `attribute --json` wrote, for the
    chosen checkpoint, with the commands that made them."""
    from gpt2_owt.tracing.memorization import load_memorization

    run, memorization = trained_run(**RUN), tmp_path / "memorization"
    made = subprocess.run([GPT2_OWT, "trace", "memorization", "--run_dir", str(run), "--data_dir",
                           str(indexed_data_dir), "--updates", "0:3", "--prefix_len", "8", "--suffix_len", "8",
                           "--checkpoints", "step1", "final", "--output_dir", str(memorization)],
                          env=cli_env(), capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr[-3000:]
    attribution = tmp_path / "attribution.json"
    attributed = subprocess.run([GPT2_OWT, "attribute", "--run_dir", str(run), "--data_dir", str(indexed_data_dir),
                                 "--query", prompt, "--checkpoint", f"step{RUN['max_steps']}", "--candidates",
                                 "updates", f"{RUN['max_steps'] - 2}:{RUN['max_steps']}", "--top_k", "5", "--json"],
                                env=cli_env(), capture_output=True, text=True, timeout=900)
    assert attributed.returncode == 0, attributed.stderr[-3000:]
    attribution.write_text(attributed.stdout)
    result = json.loads(attributed.stdout)
    with explorer_server(tmp_path / "server.log", "--run_dir", str(run), "--data_dir", str(indexed_data_dir),
                         "--memorization_dir", str(memorization), "--attribution", str(attribution)) as url:
        page = ExplorerPage(browser, url, tmp_path)
        page.page.get_by_role("tab", name="Attribution").click()
        page.page.locator("#attribution_table .virtual-row").first.wait_for(timeout=ANSWER_S * 1000)
        shown = page.table("attribution_table")
        listed = [s for s in result["sequences"] if "context" in s]
        assert [[r[0], *r[2:]] for r in shown] == [
            [str(s["rank"]), str(s["update"]), str(s["row"]), ", ".join(map(str, s["documents"])),
             ", ".join(map(str, s["source_rows"])), s["context"]] for s in listed]
        assert [float(r[1]) for r in shown] == pytest.approx([s["effect"] for s in listed], rel=1e-4, abs=1e-8)
        assert page.value("attribution_command").startswith("gpt2-owt attribute --run_dir ")
        page.screenshot("7-attribution")

        rows = load_memorization(memorization).to_pandas()
        for position, step in ((1, 1), (3, RUN["max_steps"])):  # positions 0..3: steps 0, 1, 2, final
            page.page.get_by_role("tab", name="Generate and trace").click()
            page.set_checkpoint(position, step=step)
            page.page.get_by_role("tab", name="Memorization").click()
            assert page.click("show_memorization") == ""
            expected = rows[rows["step"] == step].sort_values(["memorized", "match_fraction", "sequence"],
                                                              ascending=[False, False, True])
            assert [[r[0], r[1], r[2], r[3], r[4], r[7], r[10], r[11]] for r in page.table("memorization_table")] == [
                [str(r.sequence), str(r.update), str(r.row), str(r.document), str(r.source_row), str(r.exposures),
                 r.suffix_text, r.generated_text] for r in expected.itertuples()]
            assert page.value("memorization_summary").startswith(
                f"{int(expected.memorized.sum())} of {len(expected)} sequences memorized at step {step} ")
            assert page.value("memorization_command").startswith("gpt2-owt trace memorization --run_dir ")
        page.screenshot("8-memorization")


@pytest.mark.timeout(900)
def test_a_run_without_an_index_shows_one_line_and_keeps_serving(browser, trained_run, owt_data_dir, prompt,
                                                                   tmp_path):
    run = trained_run(**RUN)
    with explorer_server(tmp_path / "server.log", "--run_dir", str(run), "--data_dir", str(owt_data_dir)) as url:
        page = ExplorerPage(browser, url, tmp_path)
        page.fill("prompt", prompt)
        assert page.click("generate") == error_line(["trace", "spans", "--run_dir", str(run), "--checkpoint",
                                                     f"step{RUN['max_steps']}", "--data_dir", str(owt_data_dir),
                                                     "--prompt", prompt, "--generate"])
        page.page.get_by_role("tab", name="Learning curve").click()
        page.fill("curve_text", prompt)
        assert page.click("draw_curve") == ""  # the curve needs no index: its exposures are left empty
        assert [row[4] for row in page.table("curve_points")] == ["", "", "", ""]
        page.screenshot("no-index")


@pytest.mark.timeout(1800)
def test_the_release_space_serves_the_published_release(browser, trained_run, indexed_data_dir, prompt, tmp_path):
    """`gpt2-owt card --with_space` writes the Space; published with the release on the local test Hub, its app.py
    serves the release's stepN branches, and its answers equal the commands on --repo_id."""
    import gradio

    from gpt2_owt.model_card.build import main as build_main
    from gpt2_owt.core.readers import read_json
    from helpers.hub_server import HubServer
    from helpers.release import make_results

    run, repo = trained_run(**RUN), "alice/gpt2-owt-tiny"
    commit = read_json(run / "run_info.json")["git_commit"]
    results = make_results(tmp_path / "results.json", read_json(run / "hf/final/export_info.json")["weights_sha256"])
    release, code = tmp_path / "release", "https://example.org/gpt2-owt.git"
    build_main(["--run_dir", str(run), "--eval_results", str(results), "--output_dir", str(release), "--repo_id", repo,
                "--with_space", "--code_url", code])
    space = release / "space"
    assert (space / "app.py").read_bytes() == (Path(__file__).parents[1] / "tracing/space/app.py").read_bytes()
    assert f"gpt2-owt[explore,trace] @ git+{code}@{commit}" in (space / "requirements.txt").read_text().splitlines()
    assert json.loads((space / "space.json").read_text()) == {"repo_id": repo, "data_dir": None}
    card = (space / "README.md").read_text()
    assert f"sdk: gradio\nsdk_version: {gradio.__version__}\napp_file: app.py\n" in card
    assert {f"space/{p.name}" for p in space.iterdir()} <= set(read_json(release / "release_manifest.json")["files"])

    with HubServer({"hf_aliceSecretToken0123456789": "alice"}) as hub:
        env = {k: v for k, v in cli_env().items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
        env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(tmp_path / "hf_home"),
                   HF_HUB_DISABLE_TELEMETRY="1", GRADIO_ANALYTICS_ENABLED="False")
        done = subprocess.run([GPT2_OWT, "upload", str(release), "--repo_id", repo, "--checkpoints", str(run / "hf")],
                              env={**env, "HF_TOKEN": "hf_aliceSecretToken0123456789"}, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        port = free_port()
        space_env = {**env, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
                     "GPT2_OWT_DATA_DIR": str(indexed_data_dir)}
        with serving(tmp_path / "space.log", [sys.executable, str(space / "app.py")], port, space_env) as url:
            page = ExplorerPage(browser, url, tmp_path)
            assert page.value("checkpoint_label").startswith(f"step {RUN['max_steps']} (main")
            page.fill("prompt", prompt)
            assert page.click("generate") == ""
            shown = page.value("spans_command")
            assert f"--repo_id {repo} --revision main" in shown
            report = run_shown(shown, env)
            assert report["checkpoint"]["revision"] == "main" and report["spans"]
            assert page.table("spans_table")[0][2] == report["spans"][0]["text"]
            page.page.get_by_role("tab", name="Learning curve").click()
            page.fill("curve_text", report["spans"][0]["text"])
            assert page.click("draw_curve") == ""
            curve = run_shown(page.value("curve_command"), env)
            assert [r["checkpoint"] for r in curve["rows"]] == ["step0", "step1", "step2", "main"]
            assert page.table("curve_points") == [
                [str(r["step"]), r["checkpoint"], str(round(r["loss"], 6)), str(round(r["logprob"], 6)),
                 blank(r["exposures"])] for r in curve["rows"]]
            page.screenshot("space")


@pytest.mark.timeout(300)
def test_a_port_in_use_is_one_line(trained_run, tmp_path):
    """Checked before anything slow is imported: one line naming the address."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = error_line(["explore", "--run_dir", str(trained_run(**RUN)), "--port", str(port)])
    assert line == f"error: cannot serve on 127.0.0.1:{port}: Address already in use (another server? pick another --port)"


def listening_addresses(port: int) -> set[str]:
    """The local IPv4 addresses with a socket listening on `port` (/proc/net/tcp, state 0A = LISTEN)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_start_up_says_what_it_does_and_serves_on_localhost_only(release_run, tmp_path, monkeypatch, capsys):
    """While it loads, explore prints a line per phase (issue 33: a server that took a minute to listen looked
    hung), then serves on 127.0.0.1 only; `--host` is the one way to serve on another address."""
    port = free_port()
    log = tmp_path / "explore.log"
    with serving(log, [GPT2_OWT, "explore", "--run_dir", str(release_run), "--port", str(port)], port,
                 cli_env(GRADIO_ANALYTICS_ENABLED="False")):
        assert listening_addresses(port) == {"127.0.0.1"}
    phases = [line for line in log.read_text().splitlines() if line.startswith("explore: ")]
    assert phases == [f"explore: reading {release_run} (checkpoints, recipe, data)",
                      "explore: 3 checkpoints; loading the web framework (gradio)", "explore: building the page",
                      f"explore: serving on http://127.0.0.1:{port}/"]

    from gpt2_owt.tracing import explore

    served = []  # the verb's launch (explore_app.launch, as explore imports it) records instead of serving
    monkeypatch.setattr(explore, "launch", lambda app, host, port, share: served.append((host, port, share)))
    explore.main(["--run_dir", str(release_run), "--port", str(port), "--host", "0.0.0.0"])
    assert served == [("0.0.0.0", port, False)]
    assert f"explore: serving on http://0.0.0.0:{port}/ (reachable from other machines: --host)" in \
        capsys.readouterr().out

"""Every command x every option x {a zoo model file, an own model's YAML}: the option works alike for
both (its effect is read back from what was written where it shows), or it is refused in one line
naming it, exit 2, with nothing written. The own model is `tests/hf_encoders.py`'s: a `transformers`
DeiT encoder, a neck shared by seg and depth, and an image-level cls task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import torch
from typer.testing import CliRunner

import taskcut
from taskcut.cli import app
from taskcut.data.store import write_synth
from taskcut.models.own_config import load_own_config
from taskcut.models import build_model, read_spec, save

from . import hf_encoders
from .conftest import tiny_model_config

runner = CliRunner()
SOURCES = ("zoo", "own")


class Fx:
    """The files each source's commands run on, made once: base, scores, a compact and a tuned model."""

    def __init__(self, root: Path) -> None:
        self.root = root
        synth = root / "synth"
        write_synth(synth, {"train": 24, "val": 4, "test": 4}, (32, 32), seed=5)
        self.data = f"synth:{synth}"
        torch.manual_seed(0)
        model = build_model(tiny_model_config()).eval()
        with torch.no_grad():  # depth near the scenes' range, so depth ratios (delta_1.25) are defined
            for branch in model.heads["depth"].branches:
                branch.conv3.bias.fill_(1.25)
        self.base = {"zoo": save(model, root / "base.safetensors")}
        self.config = hf_encoders.write_yaml(root)
        self.base["own"] = taskcut.save(hf_encoders.hf_encoder("deit"), root / "own-base.safetensors",
                                        factory="tests.hf_encoders:hf_encoder", kwargs={"family": "deit"},
                                        tasks=load_own_config(self.config).specs)
        self.tasks = {"zoo": "seg,depth", "own": "seg,cls"}
        self.scores, self.compact, self.tuned = {}, {}, {}
        for source in SOURCES:
            self.scores[source] = root / f"{source}-scores.safetensors"
            self.compact[source] = root / f"{source}-compact.safetensors"
            self.tuned[source] = root / f"{source}-tuned.safetensors"
            _ok(*self.model_args(source, "score"), "--batches", "2", "--out", self.scores[source])
            _ok(*self.model_args(source, "prune"), "--sparsity", "0.5", "--scores", self.scores[source],
                "--out", self.compact[source])
            _ok(*self.model_args(source, "finetune"), "--steps", "2", "--val-every", "1",
                "--out", self.tuned[source])

    def model_args(self, source: str, command: str) -> list:
        """The command with what names the model and its data for `source` (no other option)."""
        own = ["--config", self.config]
        zoo = ["--data", self.data]
        named = {
            "score": ["score", *([self.base["zoo"], *zoo] if source == "zoo" else own), "--quiet"],
            "prune": ["prune", *([self.base["zoo"], *zoo] if source == "zoo" else own), "--tasks", self.tasks[source],
                      "--quiet"],
            "finetune": ["finetune", self.compact.get(source), *(zoo if source == "zoo" else own), "--quiet"],
            "evaluate": ["evaluate", self.tuned.get(source), *(zoo if source == "zoo" else own), "--quiet"],
            "export": ["export", self.tuned.get(source), *(zoo if source == "zoo" else own)],
            "bench": ["bench", self.tuned.get(source), *([] if source == "zoo" else own), "--runs", "2"],
            "info": ["info", self.tuned.get(source), *([] if source == "zoo" else ["--trust-code"])],
        }
        return named[command]

    def baseline(self, source: str) -> str:
        return str(self.base["zoo"]) if source == "zoo" else "base"


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Fx:
    return Fx(tmp_path_factory.mktemp("matrix"))


def _ok(*args: object) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (args, result.output)
    return result.output


def _refused(args: list, word: str, written: Path) -> None:
    result = runner.invoke(app, [str(a) for a in args])
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and word in lines[0], (args, result.output)
    assert not written.exists()


def _provenance(path: Path) -> dict:
    return read_spec(path)["provenance"]


def _report(path: Path) -> dict:
    return json.loads(path.read_text())


Check = Callable[[Fx, str, Path, str], None]


def _scored(batches: int, batch_size: int | None) -> Check:
    def check(fx: Fx, source: str, out: Path, output: str) -> None:
        from taskcut.cut.scores_file import scoring_settings

        settings = scoring_settings(out)
        assert settings["batches"] == batches and settings.get("batch_size", None) == (
            batch_size if batch_size is not None or source == "own" else 8)
    return check


def _pruned(key: str, value: object) -> Check:
    def check(fx: Fx, source: str, out: Path, output: str) -> None:
        got = _provenance(out)
        for part in key.split("."):
            got = got[part]
        assert got == value, (key, got)
    return check


def _measured_step(runtime: str) -> Check:
    def check(fx: Fx, source: str, out: Path, output: str) -> None:
        from taskcut.deploy.widths import channel_step

        step = channel_step(runtime, 2)  # kept in the session's cache by the prune that ran
        report = _provenance(out)["budget_report"]
        assert _provenance(out)["round_to"] == report["round_to"]  # the step, or 8 where it missed the window
        assert report["round_to"] == step or (report["round_to"] == 8 < step and
                                              f"channel step of {step}" in report["note"]), report
    return check


def _structured_smaller(fx: Fx, source: str, out: Path, output: str) -> None:
    before = sum(p.numel() for p in taskcut.load(fx.base[source], trust=True).parameters())
    assert sum(p.numel() for p in taskcut.load(out, trust=True).parameters()) < before


def _finetuned(key: str, value: object) -> Check:
    def check(fx: Fx, source: str, out: Path, output: str) -> None:
        assert _provenance(out)["finetune"][key] == value
    return check


def _evaluated(check_report: Callable[[dict], bool]) -> Check:
    def check(fx: Fx, source: str, out: Path, output: str) -> None:
        assert check_report(_report(out)), _report(out)
    return check


def _exported(check_record: Callable[[dict], bool]) -> Check:
    def check(fx: Fx, source: str, out: Path, output: str) -> None:
        record = _report(Path(f"{out}.taskcut.json"))
        assert check_record(record), record
    return check


def _benched(check_output: Callable[[dict], bool]) -> Check:
    def check(fx: Fx, source: str, out: Path, output: str) -> None:
        assert check_output(json.loads(output)), output
    return check


def _none(fx: Fx, source: str, out: Path, output: str) -> None:
    pass


OK, NO = "ok", "refused"
#: (command, option arguments, {source: "ok" or the word the refusal names}, the check of an ok run).
#: "{scores}", "{baseline}", "{base}" and "{data}" are filled per source.
CASES: list[tuple[str, list, dict[str, str], Check]] = [
    ("score", ["--batches", "3"], {"zoo": OK, "own": OK}, _scored(3, None)),
    ("score", ["--batch-size", "2"], {"zoo": OK, "own": OK}, _scored(2, 2)),
    ("score", ["--device", "cpu"], {"zoo": OK, "own": OK}, _scored(2, None)),
    ("score", ["--data", "{data}"], {"zoo": OK, "own": "--data"}, _none),
    ("score", ["--batches", "9"], {"zoo": "batches", "own": "batches"}, _none),  # more than the train split holds
    ("prune", ["--sparsity", "0.6"], {"zoo": OK, "own": OK}, _pruned("sparsity", 0.6)),
    ("prune", ["--sparsity", "0.6", "--fusion", "union"], {"zoo": OK, "own": OK}, _pruned("rule", "union")),
    ("prune", ["--sparsity", "0.4", "--structured"], {"zoo": OK, "own": OK}, _structured_smaller),
    ("prune", ["--sparsity", "0.6", "--batches", "3"], {"zoo": OK, "own": OK}, _pruned("score_batches", 3)),
    ("prune", ["--sparsity", "0.6", "--batch-size", "2"], {"zoo": OK, "own": OK}, _pruned("score_batch_size", 2)),
    ("prune", ["--sparsity", "0.6", "--scores", "{scores}"], {"zoo": OK, "own": OK}, _pruned("score_batches", 2)),
    ("prune", ["--sparsity", "0.6", "--scores", "{scores}", "--batches", "3"], {"zoo": "--batches", "own": "--batches"},
     _none),
    ("prune", ["--budget", "params=0.5"], {"zoo": OK, "own": OK}, _pruned("budget_report.kind", "params")),
    ("prune", ["--budget", "size=0.6"], {"zoo": OK, "own": OK}, _pruned("budget_report.kind", "size")),
    ("prune", ["--budget", "macs=0.7", "--structured", "--size", "32", "32"], {"zoo": OK, "own": OK},
     _pruned("budget_report.kind", "macs")),
    ("prune", ["--budget", "latency=10s", "--structured", "--runtime", "torch", "--threads", "1"],
     {"zoo": OK, "own": OK}, _pruned("budget_report.runtime", "torch")),
    # the device's file: installed (int8 or fp32), downloaded, in memory; a runtime file of an unstructured model
    # holds every weight, so its size and memory are refused for it
    ("prune", ["--budget", "size=0.9", "--structured", "--runtime", "onnxruntime"], {"zoo": OK, "own": OK},
     _pruned("budget_report.measured_on", "installed bytes of model.onnx in onnxruntime, fp32, 2 threads")),
    ("prune", ["--budget", "size=0.9", "--structured", "--runtime", "onnxruntime", "--int8"], {"zoo": OK, "own": OK},
     _pruned("budget_report.int8", True)),
    ("prune", ["--budget", "latency=10s", "--structured", "--runtime", "onnxruntime", "--int8", "--size", "32", "32"],
     {"zoo": OK, "own": OK}, _pruned("budget_report.measured_on", "median latency of model.onnx in onnxruntime, int8, "
                                                                  "2 threads")),
    ("prune", ["--budget", "transport=0.7", "--runtime", "onnxruntime"], {"zoo": OK, "own": OK},
     _pruned("budget_report.kind", "transport")),
    ("prune", ["--budget", "memory=0.99", "--structured", "--runtime", "onnxruntime"], {"zoo": OK, "own": OK},
     _pruned("budget_report.kind", "memory")),
    ("prune", ["--budget", "size=0.6", "--runtime", "onnxruntime"], {"zoo": "holds every weight",
                                                                      "own": "holds every weight"}, _none),
    ("prune", ["--budget", "transport=0.6"], {"zoo": "give the runtime", "own": "give the runtime"}, _none),
    ("prune", ["--budget", "size=0.9", "--structured", "--runtime", "torch"], {"zoo": "eager torch", "own": "eager torch"},
     _none),
    ("prune", ["--sparsity", "0.6", "--int8"], {"zoo": "--int8", "own": "--int8"}, _none),
    ("prune", ["--budget", "size=0.6", "--threads", "1"], {"zoo": "--threads", "own": "--threads"}, _none),
    ("prune", ["--budget", "params=0.5", "--runtime", "onnxruntime"], {"zoo": "--runtime", "own": "--runtime"}, _none),
    ("prune", ["--sparsity", "0.6", "--runtime", "torch"], {"zoo": "--runtime", "own": "--runtime"}, _none),
    ("prune", ["--sparsity", "0.6", "--threads", "1"], {"zoo": "--threads", "own": "--threads"}, _none),
    ("prune", ["--sparsity", "0.6", "--size", "32", "32"], {"zoo": "--size", "own": "--size"}, _none),
    # structured pruning keeps wide layers at a channel step: given, or measured for the runtime the budget is on
    ("prune", ["--sparsity", "0.4", "--structured", "--round-to", "4"], {"zoo": OK, "own": OK}, _pruned("round_to", 4)),
    ("prune", ["--budget", "macs=0.7", "--structured", "--size", "32", "32", "--round-to", "2"], {"zoo": OK, "own": OK},
     _pruned("budget_report.round_to", 2)),
    ("prune", ["--budget", "size=0.9", "--structured", "--runtime", "onnxruntime"], {"zoo": OK, "own": OK},
     _measured_step("onnxruntime")),
    ("prune", ["--sparsity", "0.6", "--round-to", "8"], {"zoo": "--round-to", "own": "--round-to"}, _none),
    ("prune", ["--sparsity", "0.4", "--structured", "--round-to", "0"], {"zoo": "round_to", "own": "round_to"}, _none),
    ("prune", ["--sparsity", "0.4", "--structured", "--round-to", "100000"], {"zoo": "round_to", "own": "round_to"},
     _none),
    ("prune", ["--budget", "params=0.5", "--size", "32", "32"], {"zoo": "--size", "own": "--size"}, _none),
    ("prune", ["--sparsity", "0.6", "--data", "{data}"], {"zoo": OK, "own": "--data"}, _none),
    ("prune", ["--sparsity", "0.6", "--config", "{bad_config}"], {"zoo": "--config", "own": "--config"}, _none),
    ("finetune", ["--steps", "2"], {"zoo": OK, "own": OK}, _finetuned("steps", 2)),
    ("finetune", ["--steps", "2", "--lr", "0.001"], {"zoo": OK, "own": OK}, _finetuned("lr", 0.001)),
    ("finetune", ["--steps", "2", "--val-every", "1"], {"zoo": OK, "own": OK}, _finetuned("val_every", 1)),
    ("finetune", ["--steps", "2", "--batch-size", "2"], {"zoo": OK, "own": OK}, _finetuned("batch_size", 2)),
    ("finetune", ["--steps", "2", "--distill"], {"zoo": OK, "own": OK}, _finetuned("distill", {
        "weight": 1.0, "temperature": 1.0, "features": 0.0})),
    ("finetune", ["--steps", "2", "--distill", "--distill-weight", "0.5", "--distill-temperature", "2"],
     {"zoo": OK, "own": OK}, _finetuned("distill", {"weight": 0.5, "temperature": 2.0, "features": 0.0})),
    ("finetune", ["--steps", "2", "--distill", "--teacher", "{base}"], {"zoo": OK, "own": OK},
     _finetuned("steps", 2)),
    ("finetune", ["--steps", "2", "--teacher", "{base}"], {"zoo": "--teacher", "own": "--teacher"}, _none),
    ("finetune", ["--steps", "2", "--checkpoint-every", "1"], {"zoo": OK, "own": OK}, _finetuned("steps", 2)),
    ("finetune", ["--steps", "2", "--resume"], {"zoo": "--resume", "own": "--resume"}, _none),
    ("finetune", ["--steps", "2", "--preset", "synth-tiny"], {"zoo": "--steps", "own": "--preset"}, _none),
    ("finetune", ["--steps", "2", "--data", "{data}"], {"zoo": OK, "own": "--data"}, _none),
    ("evaluate", ["--split", "val"], {"zoo": OK, "own": OK}, _evaluated(lambda r: r["split"] == "val")),
    ("evaluate", ["--baseline", "{baseline}"], {"zoo": OK, "own": OK},
     _evaluated(lambda r: "delta_T" in r["baseline"] and "delta_T" in r["control"])),
    ("evaluate", ["--baseline", "{baseline}", "--no-control"], {"zoo": OK, "own": OK},
     _evaluated(lambda r: "baseline" in r and "control" not in r)),
    ("evaluate", ["--control"], {"zoo": "--control", "own": "--control"}, _none),
    ("evaluate", ["--metrics", "adashare"], {"zoo": OK, "own": OK},
     _evaluated(lambda r: r["convention"] == "adashare")),
    ("evaluate", ["--split", "val", "--data", "{data}"], {"zoo": OK, "own": "--data"}, _none),
    ("export", ["--format", "openvino"], {"zoo": OK, "own": OK}, _exported(lambda r: r["runtime"] == "openvino")),
    ("export", ["--int8"], {"zoo": OK, "own": OK}, _exported(lambda r: r["int8"] is True)),
    ("export", ["--split", "val"], {"zoo": OK, "own": OK}, _exported(lambda r: r["source"]["split"] == "val")),
    ("export", ["--size", "32", "32"], {"zoo": "--size", "own": "--size"}, _none),
    ("bench", ["--json", "--runtime", "torch"], {"zoo": OK, "own": OK}, _benched(lambda r: r["model"]["runtime"] == "torch")),
    ("bench", ["--json", "--threads", "1"], {"zoo": OK, "own": OK}, _benched(lambda r: r["model"]["threads"] == 1)),
    ("bench", ["--json", "--size", "32", "32"], {"zoo": OK, "own": OK}, _benched(lambda r: r["model"]["size"] == [32, 32])),
    ("bench", ["--json", "--int8", "--data", "{data}"], {"zoo": OK, "own": "--data"}, _benched(lambda r: r["model"]["int8"])),
    ("bench", ["--json", "--int8"], {"zoo": OK, "own": OK}, _benched(lambda r: r["model"]["int8"])),
    ("bench", ["--json", "--vs", "{base}", "--vs-runtime", "torch"], {"zoo": OK, "own": OK},
     _benched(lambda r: r["vs"]["runtime"] == "torch" and r["ratios"] is not None)),
    ("info", ["--json"], {"zoo": OK, "own": OK}, _benched(lambda spec: spec["format"] == "taskcut.model")),
]

#: The output file each command writes, by suffix (none: it writes nothing).
OUT = {"score": ".safetensors", "prune": ".safetensors", "finetune": ".safetensors", "evaluate": ".json",
       "export": ".onnx"}


def _fill(fx: Fx, source: str, values: list, tmp_path: Path) -> list:
    bad = tmp_path / "preset-like.yaml"
    bad.write_text("preset: synth-tiny\n")
    names = {"{scores}": fx.scores[source], "{baseline}": fx.baseline(source), "{base}": fx.base[source],
             "{data}": fx.data, "{bad_config}": bad}
    return [names.get(v, v) if isinstance(v, str) else v for v in values]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("command, option, expected, check", CASES,
                         ids=[f"{c}{''.join(o)}".replace("{", "").replace("}", "") for c, o, _, _ in CASES])
def test_every_option_works_alike_or_is_refused_in_one_line(fx: Fx, tmp_path: Path, source: str, command: str,
                                                           option: list, expected: dict, check: Check) -> None:
    args = fx.model_args(source, command) + _fill(fx, source, option, tmp_path)
    if command in ("score", "prune") and "--batches" not in option and "--scores" not in option:
        args += ["--batches", "2"]  # the train split holds 24 images
    if command == "evaluate" and "--baseline" not in option and "--control" not in option:
        args += ["--baseline", fx.baseline(source)]
    suffix = OUT.get(command)
    if command == "export" and "openvino" in option:
        suffix = ".xml"
    out = tmp_path / f"out{suffix or ''}"
    if suffix is not None:
        args += ["--out", out]
    if expected[source] == OK:
        output = _ok(*args)
        check(fx, source, out, output)
    else:
        _refused(args, expected[source], out)


@pytest.mark.parametrize("source", SOURCES)
def test_the_jobs_are_what_the_commands_run(fx: Fx, tmp_path: Path, source: str) -> None:
    """`taskcut.jobs` in Python (the README's example): the records it returns, and the same masks and
    weights as the command line's files."""
    from taskcut import jobs
    from taskcut.compact.masking import masks_of

    opened = jobs.open_source(fx.base["zoo"], data=fx.data) if source == "zoo" else jobs.open_source(config=fx.config)
    tasks = fx.tasks[source].split(",")
    result = jobs.prune(opened, jobs.PruneSettings(tasks=tasks, sparsity=0.5, scores=fx.scores[source]),
                        tmp_path / "compact.safetensors", show_progress=False)
    assert isinstance(result, jobs.PruneResult) and result.tasks == tasks and result.path.is_file()
    assert result.params_after < result.params_selected and result.budget is None
    ours, cli = masks_of(result.model), masks_of(taskcut.load(fx.compact[source], trust=True))
    assert ours and set(ours) == set(cli) and all(bool((ours[n] == cli[n]).all()) for n in ours)
    tuned = jobs.finetune(jobs.source_of_file(result.path, fx.config if source == "own" else None, fx.data
                                              if source == "zoo" else None),
                          result.path, jobs.FinetuneSettings(steps=2, val_every=1), tmp_path / "tuned.safetensors",
                          show_progress=False)
    assert isinstance(tuned, jobs.FinetuneResult) and list(tuned.specs) == tasks
    cli_weights = taskcut.load(fx.tuned[source], trust=True).state_dict()
    assert all(torch.equal(v, cli_weights[k]) for k, v in taskcut.load(tuned.path, trust=True).state_dict().items())


@pytest.mark.parametrize("source", SOURCES)
def test_no_job_overwrites_what_it_reads(fx: Fx, tmp_path: Path, source: str) -> None:
    """--out naming the source's own model file (or an own model's YAML) is refused with --force too, and the
    file is left as it was."""
    target = fx.base["zoo"] if source == "zoo" else fx.config
    before = target.read_bytes()
    for command in ("score", "prune"):
        args = fx.model_args(source, command) + (["--sparsity", "0.5"] if command == "prune" else [])
        result = runner.invoke(app, [str(a) for a in args + ["--batches", "2", "--out", target, "--force"]])
        assert result.exit_code == 2 and "would overwrite" in result.output, result.output
        assert target.read_bytes() == before


@pytest.mark.parametrize("source", SOURCES)
def test_the_python_jobs_refuse_what_the_commands_refuse(fx: Fx, tmp_path: Path, source: str) -> None:
    from taskcut import jobs
    from taskcut.errors import TaskcutError

    opened = jobs.open_source(fx.base["zoo"], data=fx.data) if source == "zoo" else jobs.open_source(config=fx.config)
    out = tmp_path / "out.safetensors"
    with pytest.raises(TaskcutError, match="--runtime is the device's runtime"):
        jobs.prune(opened, jobs.PruneSettings(tasks=["seg"], sparsity=0.5, runtime="torch"), out)
    with pytest.raises(TaskcutError, match="--control needs --baseline"):
        jobs.evaluate(opened, fx.tuned[source], jobs.EvaluateSettings(control=True), out)
    assert not out.exists()
    if source == "own":
        with pytest.raises(TaskcutError, match="a crop does not apply"):
            jobs.finetune(opened, fx.compact[source], jobs.FinetuneSettings(steps=1, crop=(8, 8)), out)
        with pytest.raises(TaskcutError, match="--control needs --baseline base"):
            jobs.evaluate(opened, fx.tuned[source], jobs.EvaluateSettings(baseline=fx.base["own"], control=True), out)
        assert not out.exists()


def test_an_own_split_shorter_than_the_default_is_scored_whole_and_recorded_so(fx: Fx, tmp_path: Path) -> None:
    """Without --batches, an own model's data factory with fewer batches than the default (50) is scored
    whole and the file records how many; asked for more than it has, it is refused (the matrix)."""
    from taskcut.cut.scores_file import scoring_settings

    out = tmp_path / "s.safetensors"
    _ok("score", "--config", fx.config, "--out", out, "--quiet")
    assert scoring_settings(out)["batches"] == len(hf_encoders.data("deit")["train"])

"""Whether a change moved any figure: every command on a model file and on an own model's YAML, run by
two versions of taskcut, their outputs compared (weights by hash, metrics and rows by value).

The same small runs for both: score; prune unstructured, structured, at params/size/MACs budgets and
with another rule, each scored directly and from the scores file; finetune; evaluate with the dense
control; export to ONNX with its evaluation; compare (two methods, both sources); a fleet of two
devices (both sources). Each version runs in a fresh process with its own empty cache; `--old REF`
is checked out with `git worktree`. Prints every output that differs (latency and time columns are
left out: they are measured, not computed).

Run: python benchmarks/figures_digest.py --old REF          (about a minute here)
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def digest(out: Path) -> dict:
    """Run everything with the taskcut importable from PYTHONPATH; the outputs' digest."""
    import torch
    import yaml
    from safetensors.torch import save_file
    from typer.testing import CliRunner

    from taskcut.cli import app
    from taskcut.data.store import write_synth
    from taskcut.models import build_model, load, save

    sys.path.insert(0, str(ROOT))  # this tree's test models (the own model and its data)
    from tests import own_models
    from tests.conftest import tiny_model_config

    runner = CliRunner()
    synth = out / "synth"
    write_synth(synth, {"train": 12, "val": 4, "test": 6}, (32, 32), seed=3)
    torch.manual_seed(0)
    m = build_model(tiny_model_config()).eval()
    with torch.no_grad():  # depth near the scenes' range, so depth ratios (delta_1.25) are defined
        for branch in m.heads["depth"].branches:
            branch.conv3.bias.fill_(1.25)
    base = save(m, out / "base.safetensors")
    w = out / "w.safetensors"
    save_file({k: v.contiguous() for k, v in own_models.fpn().state_dict().items()}, str(w))
    TASKS = {"seg": {"kind": "segmentation", "classes": 6}, "depth": {"kind": "depth"}, "normal": {"kind": "normal"}}
    cfg = out / "own.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"factory": "tests.own_models:fpn", "kwargs": {"width": 8},
                                             "weights": "w.safetensors"},
                                   "tasks": TASKS, "data": {"factory": "tests.own_models:data",
                                                            "kwargs": {"tasks": list(TASKS)}}}))

    def run(*args: object) -> None:
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, (args[:3], result.output)

    def weights(path: Path) -> str:
        model = load(path, trust=True)
        d = hashlib.sha256()
        for k, v in sorted(model.state_dict().items()):
            d.update(k.encode())
            d.update(v.detach().contiguous().numpy().tobytes())
        return d.hexdigest()[:16]

    def report(path: Path) -> list:
        ev = json.loads(path.read_text())
        return [ev["metrics"], ev["baseline"]["delta_T"], ev["control"]["delta_T"]]

    res: dict = {}
    data = ["--data", f"synth:{synth}"]
    zoo = [base, *data, "--batches", "2", "--batch-size", "4", "--quiet", "--force"]
    own = ["--config", cfg, "--quiet", "--force"]
    run("score", *zoo, "--out", out / "zs.safetensors")
    run("score", *own, "--batches", "2", "--out", out / "os.safetensors")
    prunes = {"un": ["--sparsity", "0.7"], "st": ["--sparsity", "0.5", "--structured"],
              "bp": ["--budget", "params=0.4"], "bs": ["--budget", "size=0.5"],
              "bm": ["--budget", "macs=0.5", "--structured"],
              "union": ["--sparsity", "0.6", "--fusion", "union"]}
    sources = {"z": ([base, *data], ["--batches", "2", "--batch-size", "4"], out / "zs.safetensors"),
               "o": (["--config", cfg], ["--batches", "2"], out / "os.safetensors")}
    for source, (named, scoring, scores) in sources.items():
        for name, extra in prunes.items():
            if source == "o" and name in ("bs", "bm", "union"):
                continue
            direct, from_file = out / f"{source}_{name}.safetensors", out / f"{source}_{name}_f.safetensors"
            run("prune", *named, *scoring, "--tasks", "seg,depth", *extra, "--out", direct, "--quiet", "--force")
            run("prune", *named, "--scores", scores, "--tasks", "seg,depth", *extra, "--out", from_file, "--quiet",
                "--force")
            res[f"{source}_{name}"], res[f"{source}_{name}_scores"] = weights(direct), weights(from_file)
    run("finetune", out / "z_un.safetensors", *data, "--steps", "3", "--val-every", "1", "--batch-size", "4",
        "--out", out / "zft.safetensors", "--force", "--quiet")
    run("finetune", out / "o_un.safetensors", *own, "--steps", "3", "--val-every", "1",
        "--out", out / "oft.safetensors")
    run("evaluate", out / "zft.safetensors", *data, "--baseline", base, "--out", out / "zev.json", "--force", "--quiet")
    run("evaluate", out / "oft.safetensors", *own, "--baseline", "base", "--out", out / "oev.json")
    run("export", out / "zft.safetensors", "--format", "onnx", "--out", out / "zex.onnx", "--force", *data)
    run("export", out / "oft.safetensors", "--config", cfg, "--format", "onnx", "--out", out / "oex.onnx", "--force")
    res.update({"zft": weights(out / "zft.safetensors"), "oft": weights(out / "oft.safetensors"),
                "zev": report(out / "zev.json"), "oev": report(out / "oev.json")})
    for name in ("zex", "oex"):
        res[name] = json.loads((out / f"{name}.onnx.taskcut.json").read_text()).get("evaluation")

    compare = ["--sparsities", "0.5", "--methods", "cut,magnitude", "--seeds", "0", "--finetune-steps", "2",
               "--batches", "2", "--quiet"]
    run("compare", base, *data, "--tasks", "seg,depth", "--batch-size", "4", *compare, "--out", out / "cz")
    run("compare", "--config", cfg, "--tasks", "seg,normal", *compare, "--out", out / "co")
    fleet = {"base": str(base), "data": f"synth:{synth}", "scoring": {"batches": 2, "batch_size": 4},
             "finetune": {"steps": 2, "batch_size": 4, "val_every": 1},
             "bench": {"threads": 1, "size": [32, 32], "runs": 2},
             "devices": [{"name": "a", "tasks": ["seg"], "budget": "params=0.5"},
                         {"name": "b", "tasks": ["seg", "depth"], "budget": "macs=0.6", "structured": True}]}
    (out / "fz.yaml").write_text(yaml.safe_dump(fleet))
    own_fleet = {**{k: v for k, v in fleet.items() if k not in ("base", "data")}, "config": str(cfg),
                 "scoring": {"batches": 2}, "finetune": {"steps": 2, "val_every": 1}}
    (out / "fo.yaml").write_text(yaml.safe_dump(own_fleet))
    run("fleet", out / "fz.yaml", "--out", out / "fz", "--quiet")
    run("fleet", out / "fo.yaml", "--out", out / "fo", "--quiet")
    for name in ("cz", "co"):
        with open(out / name / "results.csv") as f:
            res[name] = [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in csv.DictReader(f)]
    for name in ("fz", "fo"):
        with open(out / name / "fleet.csv") as f:
            res[name] = [{k: v for k, v in r.items() if "latency" not in k and k != "key"} for r in csv.DictReader(f)]
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", help="git ref of the previous version (omitted: digest this tree, print JSON)")
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.old is None:
        out = args.out or Path(tempfile.mkdtemp())
        os.environ.setdefault("TASKCUT_CACHE", str(out / "cache"))
        print(json.dumps(digest(out), sort_keys=True))
        return
    digests = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        old_tree = tmp / "old"
        subprocess.run(["git", "worktree", "add", "--detach", str(old_tree), args.old], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            for which, tree in (("old", old_tree), ("new", ROOT)):
                env = {**os.environ, "PYTHONPATH": str(tree), "TASKCUT_CACHE": str(tmp / f"cache-{which}")}
                result = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--out", str(tmp / which)],
                                        cwd=tmp, env=env, capture_output=True, text=True)
                if result.returncode != 0:
                    raise SystemExit(f"the {which} version failed:\n{result.stderr[-3000:]}")
                digests[which] = json.loads(result.stdout.strip().splitlines()[-1])
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=ROOT, capture_output=True)
    old, new = digests["old"], digests["new"]
    differ = 0
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key):
            continue
        if isinstance(old.get(key), list) and isinstance(new.get(key), list) and key in ("cz", "co", "fz", "fo"):
            for i, (a, b) in enumerate(zip(old[key], new[key])):
                for column in sorted(set(a) | set(b)):
                    if a.get(column) != b.get(column):
                        differ += 1
                        print(f"{key} row {i} {column}: {a.get(column)} -> {b.get(column)}")
        else:
            differ += 1
            print(f"{key}: {json.dumps(old.get(key))[:200]} -> {json.dumps(new.get(key))[:200]}")
    print(f"{len(set(old) | set(new))} outputs compared; {differ} differ")


if __name__ == "__main__":
    main()

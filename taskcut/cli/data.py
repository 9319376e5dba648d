"""`taskcut data synth`, `data show` and `import`: data sets and checkpoints of the papers."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import TaskcutError
from .common import app, data_app, out, _clean_errors, _FORCE, _QUIET, _check_size


@data_app.command("synth")
@_clean_errors
def data_synth(
    out_dir: Path = typer.Option(..., "--out", help="Folder to write (shards + manifest.json)."),
    train: int = typer.Option(1000, help="Training images."),
    val: int = typer.Option(100, help="Validation images."),
    test: int = typer.Option(200, help="Test images."),
    size: tuple[int, int] = typer.Option((64, 64), help="Image height and width."),
    seed: int = typer.Option(0, help="Base seed; a scene is a function of (seed, split, index)."),
    force: bool = typer.Option(False, help="Replace a non-empty output folder."),
    quiet: bool = _QUIET,
) -> None:
    """Render the embedded synthetic multi-task scenes to DIR."""
    from ..data.store import write_synth
    from ..progress import progress_bar

    _check_size(size)
    if seed < 0:
        raise TaskcutError(f"--seed must be non-negative, got {seed}")
    counts = {"train": train, "val": val, "test": test}
    with progress_bar(not quiet) as bar:
        job = bar.add_task("render synth", total=max(sum(counts.values()), 0), info=f"{size[0]}x{size[1]}")
        manifest = write_synth(out_dir, counts, size, seed=seed, force=force,
                               progress=lambda n: bar.update(job, advance=n))
    out.print(f"wrote {sum(counts.values())} images to {out_dir} ({manifest.name})")


@data_app.command("show")
@_clean_errors
def data_show(
    data_dir: Path = typer.Argument(..., help="A synth set folder."),
    index: int = typer.Option(0, help="Item index within the split."),
    split: str = typer.Option("train", help="train, val or test."),
    out_file: Path = typer.Option(..., "--out", help="PNG file to write."),
    force: bool = typer.Option(False, help="Replace an existing file."),
) -> None:
    """Draw one item: its image and its five targets in one picture."""
    from ..data.dataset import SynthDataset
    from ..data.show import save_grid
    from ..fileio import check_writable

    check_writable(out_file, force)
    dataset = SynthDataset(data_dir, split)
    if not 0 <= index < len(dataset):
        raise TaskcutError(f"--index {index} is outside the {split} split, which has {len(dataset)} items")
    save_grid(dataset[index], dataset.classes, out_file, title=f"{data_dir.name} {split} #{index}")
    out.print(f"wrote {out_file}")


@app.command("import")
@_clean_errors
def import_cmd(
    checkpoint: Path = typer.Argument(..., help="A SceneNet checkpoint of AdaShare, DiSparse or CUT (.pth/.pth.tar)."),
    arch: str = typer.Option("scenenet-resnet34", help="scenenet-resnet34 or scenenet-resnet18."),
    tasks: str = typer.Option(..., help="Task names in the checkpoint's order (task1, task2, ...), e.g. "
                                        "seg,normal,depth; other names as name:kind."),
    out_file: Path = typer.Option(..., "--out", help="taskcut model file to write (.safetensors)."),
    preset: Optional[str] = typer.Option(None, help="Take head dilations, dropout and loss weights from a preset, "
                                                    "e.g. nyuv2 (default: the papers' 6,12,18,24 and weights 1)."),
    config: Optional[Path] = typer.Option(None, help="The same from a YAML config."),
    force: bool = _FORCE,
) -> None:
    """Import a reference SceneNet checkpoint (read weights-only; pruned masks kept) as a taskcut model."""
    from ..config import load_config
    from ..models import count_parameters
    from ..models.reference import import_checkpoint

    template = load_config(preset, config).model if preset is not None or config is not None else None
    model = import_checkpoint(checkpoint, arch, tasks, out_file, template, force)
    out.print(f"imported {arch} with tasks {', '.join(model.tasks)} ({count_parameters(model):,} parameters); "
              f"wrote {out_file}")

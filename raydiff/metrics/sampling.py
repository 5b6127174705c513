"""``raydiff sample RUN_DIR``: a grid of fresh samples from a finished run's saved model.

The run folder's ``model/`` was written by ``DDPMPipeline.save_pretrained``, so it is loaded the way
diffusers users load any DDPM (local files only: nothing is downloaded), and sampled with the same
code the evaluator uses, so a grid made here matches the run's own grids for the same sampler and seed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import DataError

log = logging.getLogger(__name__)


def find_model_dir(run_dir: str | Path) -> Path:
    """``RUN_DIR/model`` (or RUN_DIR itself when it is the pipeline folder); DataError when neither holds one."""
    run_dir = Path(run_dir)
    for cand in (run_dir / "model", run_dir):
        if (cand / "model_index.json").is_file():
            return cand
    raise DataError(
        f"{str(run_dir)!r} holds no saved model: expected {str(run_dir / 'model' / 'model_index.json')!r} "
        "(written by DDPMPipeline.save_pretrained at the end of a run). Pass a run folder of a "
        "finished, non-dry run."
    )


def load_pipeline(model_dir: Path):
    """(unet, scheduler) from a DDPMPipeline folder, from local files only."""
    from diffusers import DDPMPipeline

    try:
        pipe = DDPMPipeline.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"could not load the model in {str(model_dir)!r}: {exc}") from None
    return pipe.unet, pipe.scheduler


def run_guidance(run_dir: str | Path) -> float:
    """The run's own ``eval.guidance_scale`` (EvalConfig's default for a bare pipeline folder)."""
    from ..config_load import load_config

    path = Path(run_dir) / "config.yaml"
    return load_config(path if path.is_file() else None).eval.guidance_scale


def run_sampler(run_dir: str | Path) -> tuple[str, int | None]:
    """The run's own ``eval.sampler`` and ``eval.sample_steps`` from its ``config.yaml``, so that a
    grid sampled later matches the run's grids by default; EvalConfig's defaults for a bare pipeline
    folder (or a config that leaves them out)."""
    from ..config_load import load_config

    path = Path(run_dir) / "config.yaml"
    ev = load_config(path if path.is_file() else None).eval
    return ev.sampler, ev.sample_steps


def sample_run(
    run_dir: str | Path,
    n: int,
    out: str | Path,
    sampler: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    class_label: int | None = None,
    guidance: float | None = None,
) -> tuple[Path, np.ndarray]:
    """Sample ``n`` images from the run's model and write them as one PNG grid at ``out``.

    ``sampler`` None: the run's own sampler (and its steps, unless ``steps`` is given). A class-conditional
    model: ``class_label`` samples that class only; None draws n // classes of each class, one grid row per
    class. ``guidance`` None: the run's ``eval.guidance_scale``."""
    from ..diffusion import sample_images
    from ..outputs import write_grid

    if n < 1:
        raise DataError(f"--n must be >= 1, got {n}")
    if sampler is None:
        sampler, run_steps = run_sampler(run_dir)
        steps = steps if steps is not None else run_steps
    unet, scheduler = load_pipeline(find_model_dir(run_dir))
    T = scheduler.config.num_train_timesteps
    if steps is not None and not 1 <= steps <= T:
        raise DataError(f"--steps must be in [1, {T}] (the model's num_train_timesteps), got {steps}")
    unet.to(device)
    labels, k = None, unet.config.num_class_embeds
    if k is None and (class_label is not None or guidance is not None):
        raise DataError(
            f"{str(run_dir)!r} holds an unconditional model: --class and --guidance need a run with "
            "model.conditional: true"
        )
    if k is not None:
        from ..utility import sample_labels

        k = int(k) - 1  # the last class embedding is "no label"
        if class_label is not None and class_label >= k:
            raise DataError(f"--class {class_label}: the model knows classes 0 to {k - 1}")
        labels = np.full(n, class_label, np.int64) if class_label is not None else sample_labels(k, max(1, n // k))
        n = len(labels)
        guidance = guidance if guidance is not None else run_guidance(run_dir)
    images = sample_images(
        unet,
        scheduler,
        n,
        seed,
        sampler,
        steps,
        device,
        class_labels=labels,
        guidance_scale=1.0 if guidance is None else guidance,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if k is not None and class_label is None and labels is not None:
        from ..utility import write_class_grid

        write_class_grid(out, images, labels, k, max(1, n // k))
    else:
        write_grid(out, images)
    log.info("wrote %d samples (%s) to %s", n, sampler, out)
    return out, images


__all__ = ["find_model_dir", "load_pipeline", "sample_run"]

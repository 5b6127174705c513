"""``raydiff run | ...``: a thin shell over the Python API.

Exit codes: 0 done; 2 a user error (one paragraph naming the problem, never a traceback); 1 an
internal error (a bug: its message carries the remote traceback); 128 + the signal's number when
SIGINT (130), SIGTERM (143) or SIGHUP (129) stopped a run, whose folder is then complete.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from collections.abc import Sequence

from .errors import InternalError, RaydiffError
from .signals import exit_code


def _whole_number(minimum: int, noun: str = "a whole number"):
    """An argparse type: a whole number >= ``minimum`` (argparse turns the error into a usage message, exit 2)."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {n}")
        return n

    return parse


_positive = _whole_number(1)


def _path(text: str) -> str:
    """An argparse type: a file or folder name (a NUL character would make every file call raise)."""
    if "\x00" in text:
        raise argparse.ArgumentTypeError(f"{text!r} holds a NUL character, which no file name can hold")
    return text


_class_index = _whole_number(0, "a class index (a whole number)")  # `raydiff sample --class`


def _guidance(text: str) -> float:
    """An argparse type: a finite guidance weight in [0, 100] (`raydiff sample --guidance`)."""
    import math

    try:
        w = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(w) or not 0 <= w <= 100:
        raise argparse.ArgumentTypeError(f"must be a finite number in [0, 100], got {text}")
    return w


def _seed(text: str) -> int:
    """An argparse type: a seed in [0, 2^63 - 1]."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= n < 2**63:
        raise argparse.ArgumentTypeError(f"must be in [0, 2^63-1], got {n}")
    return n


def _group_sizes(text: str) -> tuple[int, ...]:
    """An argparse type: comma-separated group sizes, each >= 1 (bench grouped --groups 1,2,4)."""
    sizes = tuple(_positive(part) for part in text.split(",") if part.strip())
    if not sizes:
        raise argparse.ArgumentTypeError(f"expected group sizes such as 1,2,4, got {text!r}")
    return sizes


def _presets() -> list[str]:
    """model.preset's allowed values, read from the config's type (no torch import for --help)."""
    from typing import get_args, get_type_hints

    from .config import ModelConfig

    return list(get_args(get_type_hints(ModelConfig)["preset"]))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raydiff", description="Federated DDPM training simulated on Ray actors.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run one scenario and write its run folder")
    r.add_argument("scenario", nargs="?", type=_path, help="scenario YAML file")
    r.add_argument("--resume", metavar="RUN_DIR", type=_path, help="continue a killed run from its last checkpoint")
    r.add_argument("--out", type=_path, help="run folder (default runs/<name>-<timestamp>)")
    r.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set strategy.name=fedasync (repeatable)",
    )
    r.add_argument("--address", help="Ray cluster address (same as --set run.address=...)")
    r.add_argument(
        "--force",
        action="store_true",
        help="write into --out even if it holds another config's finished run (replaced) or other files",
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument(
        "--log",
        action="append",
        default=[],
        choices=["tensorboard", "mlflow"],
        help="live tracker beside the run folder (repeatable; as --set run.log=[...]; pip install 'raydiff[track]')",
    )
    r.add_argument("-v", "--verbose", action="store_true")
    w = sub.add_parser("sweep", help="run the cartesian product of a sweep file (skips finished runs)")
    w.add_argument("sweep", type=_path, help="sweep YAML file")
    w.add_argument("--out", type=_path, help="sweep folder (default: the file's 'out', else runs/<name>)")
    w.add_argument("--list", action="store_true", help="list the planned runs and whether they are done")
    rp = sub.add_parser("report", help="one self-contained HTML page from run or sweep folders")
    rp.add_argument("paths", nargs="+", type=_path, help="run folders, or folders holding runs (a sweep)")
    rp.add_argument(
        "--out", type=_path, help="HTML file to write (default: report.html inside the run or sweep folder given)"
    )
    rp.add_argument("--title")
    sm = sub.add_parser("sample", help="sample a PNG grid from a finished run's saved model")
    sm.add_argument("run_dir", type=_path, help="run folder (its model/ is loaded; nothing is downloaded)")
    sm.add_argument("--n", type=_positive, default=64, help="number of samples (default 64)")
    sm.add_argument("--out", type=_path, default="grid.png", help="PNG file to write (default grid.png)")
    sm.add_argument(
        "--sampler",
        choices=["ddpm", "ddim"],
        help="default: the run's eval.sampler and eval.sample_steps (ddpm for a bare model folder)",
    )
    sm.add_argument(
        "--steps", type=_positive, help="sampling steps (default: all training steps for ddpm, 50 for ddim)"
    )
    sm.add_argument("--seed", type=_seed, default=0)
    sm.add_argument(
        "--class",
        dest="class_label",
        type=_class_index,
        help="a class-conditional run: sample this class only (default: equal numbers of every class, one row each)",
    )
    sm.add_argument(
        "--guidance",
        type=_guidance,
        help="a class-conditional run: classifier-free guidance weight (default: the run's eval.guidance_scale)",
    )
    st = sub.add_parser("status", help="a run folder's state (running, killed, finished, ...) and records so far")
    st.add_argument("run_dir", type=_path, help="run folder")
    st.add_argument("--json", action="store_true", help="print JSON")
    ev = sub.add_parser(
        "eval", help="compute what a stopped run skipped (final evaluation and FID, final samples, the audit)"
    )
    ev.add_argument("run_dir", type=_path, help="run folder whose summary.json lists not_computed")
    au = sub.add_parser("audit", help="privacy audit of a finished run: membership inference and memorisation")
    au.add_argument(
        "run_dir",
        type=_path,
        help="run folder (config.yaml and model/ are read; privacy.parquet, "
        "privacy.png and summary.json's audit fields are written)",
    )
    au.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the model is scored")
    b = sub.add_parser("bench", help="measure simulator overhead, aggregation cost, engine rate or grouped training")
    b.add_argument("what", choices=["overhead", "aggregate", "engine", "grouped", "stream"])
    b.add_argument("--max-updates", type=_positive, help="stream: versions per quickstart run (default: its own)")
    b.add_argument(
        "--groups",
        type=_group_sizes,
        default=(1, 2, 4, 8, 16),
        help="grouped: group sizes G, comma-separated (default 1,2,4,8,16)",
    )
    b.add_argument("--actors", type=_positive, help="overhead: workers/actors (default: CPU count; 8 on cuda)")
    b.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="overhead: where clients train")
    b.add_argument("--preset", default="tiny", choices=_presets(), help="overhead: UNet preset")
    b.add_argument("--image-size", type=_positive, default=8, help="overhead: image size")
    b.add_argument("--batch", type=_positive, default=32, help="overhead: batch size")
    b.add_argument("--bf16", action="store_true", help="overhead: bf16 autocast")
    b.add_argument("--local-steps", type=_positive, default=20, help="overhead: steps per job (default 20)")
    b.add_argument(
        "--repeats",
        type=_positive,
        default=3,
        help="overhead: (bare, raydiff) pairs; the median ratio is reported (default 3)",
    )
    b.add_argument("--size", type=_positive, default=35_746_307, help="aggregate: vector length (default ddpm-cifar10)")
    b.add_argument(
        "--strategy", default="fedbuff", choices=["fedbuff", "fedasync", "fedavg"], help="aggregate: strategy"
    )
    b.add_argument("--clients", type=_positive, default=10000, help="engine: simulated clients")
    b.add_argument(
        "--availability", default="always", choices=["always", "bernoulli", "onoff"], help="engine: availability model"
    )
    _cluster_parsers(sub)
    return p


def _cluster_parsers(sub: argparse._SubParsersAction) -> None:
    """``raydiff data fetch`` and ``raydiff cluster local up|down`` (README "Clusters and faults")."""
    from .datafetch import FETCHABLE

    d = sub.add_parser("data", help="put a dataset in place before runs read it (on a cluster: once, on the head)")
    dsub = d.add_subparsers(dest="data_command", required=True)
    f = dsub.add_parser("fetch", help="download a torchvision dataset into --root (nothing if it is already there)")
    f.add_argument("dataset", choices=FETCHABLE)
    f.add_argument("--root", required=True, type=_path, help="the folder a scenario's data.root names")
    f.add_argument("--url", help="cifar10: fetch the tarball from here (a mirror, file://...) instead")
    f.add_argument("--md5", help="cifar10 with --url: the tarball's md5sum (required with --url)")
    c = sub.add_parser("cluster", help="a Ray cluster of several raylets on this machine, to try cluster runs")
    csub = c.add_subparsers(dest="cluster_command", required=True)
    loc = csub.add_parser("local", help="start or stop a local multi-raylet cluster in a folder of its own")
    lsub = loc.add_subparsers(dest="local_command", required=True)
    up = lsub.add_parser("up", help="start a head and --workers raylets on 127.0.0.2, on free ports, with a token")
    up.add_argument("dir", type=_path, help="a new folder (short path): temp dir, token, logs, env file")
    up.add_argument("--workers", type=int, default=1, choices=range(0, 9), metavar="N", help="raylets besides the head")
    up.add_argument("--num-cpus", type=_positive, default=1, help="CPUs each raylet offers (default 1)")
    dn = lsub.add_parser("down", help="stop exactly the cluster started in DIR (its processes only)")
    dn.add_argument("dir", type=_path)


def _precheck(scenario: str, overrides: list[str]) -> None:
    """The config and the strategy, checked BEFORE torch, diffusers and Ray are imported (``raydiff.runner``
    imports them: seconds of CPU), so a ``--set`` typo is reported at once. The run checks everything again."""
    import numpy as np

    from .config_load import load_config
    from .strategies import build_strategy

    cfg = load_config(scenario, overrides)
    build_strategy(cfg.strategy, cfg.clients.num_clients, rng=np.random.default_rng(0))


def _exit_now(code: int) -> None:
    """End the process at once, once a stopped run's folder and status are written and Ray is down: the
    interpreter's own finalization (torch, Ray's and the loggers' exit hooks) took 10 to 17 s more under load,
    past the 30 s a batch scheduler waits between SIGTERM and SIGKILL."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _fail(msg: str) -> int:
    print(
        "raydiff: error: " + textwrap.fill(" ".join(str(msg).split()), width=100, subsequent_indent="  "),
        file=sys.stderr,
    )
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "run":
            overrides = list(args.overrides) + ([f"run.address={args.address}"] if args.address else [])
            if args.log:  # --log a --log b: run.log=[a, b]
                overrides.append(f"run.log=[{', '.join(dict.fromkeys(args.log))}]")
            progress = not args.no_progress and os.environ.get("RAYDIFF_NO_PROGRESS") != "1"
            if (args.scenario is None) == (args.resume is None):
                raise RaydiffError("give a scenario file, or --resume RUN_DIR (not both)")
            if args.scenario is not None:
                _precheck(args.scenario, overrides)  # a typo costs a fraction of a second, not torch's import
            from .runner import run

            result = run(
                args.scenario, overrides, out=args.out, progress=progress, resume=args.resume, force=args.force
            )
            s = result.summary
            if s.get("already_finished"):
                print(
                    f"run folder: {result.out_dir} already finished (version {s.get('final_version')}); "
                    "nothing to resume, nothing changed"
                )
                return 0
            print(f"run folder: {result.out_dir}")
            from .outputs import json_safe

            print(
                json.dumps(
                    json_safe(
                        {
                            k: s[k]
                            for k in (
                                "final_version",
                                "updates_applied",
                                "virtual_time",
                                "wall_seconds",
                                "model_sha256",
                            )
                            if k in s
                        }
                    ),
                    indent=1,
                )
            )
            if s.get("dry_run") and s.get("events_per_second"):
                print(
                    f"dry run: {s['jobs_dispatched']:,} events in {s['loop_seconds']:.2f} s: "
                    f"{s['events_per_second']:,.0f} events/s"
                )
            if s.get("interrupted"):
                import signal

                code = exit_code(signal.Signals[s["stop_signal"]] if s.get("stop_signal") else None)
                if argv is None:  # the command itself (not main() called from Python): bounded to the very end
                    _exit_now(code)
                return code
            return 0
        if args.command == "sweep":
            from .sweep import describe, plan, run_sweep

            if args.list:
                spec, runs = plan(args.sweep, args.out)
                for r in runs:  # only a finished run of the same config is "done"
                    print(f"{describe(r, spec['base']):<11}  {r.out_dir}")
                return 0
            records = run_sweep(args.sweep, args.out, progress=os.environ.get("RAYDIFF_NO_PROGRESS") != "1")
            return _sweep_report(records)
        if args.command == "report":
            from pathlib import Path

            try:
                from analysis.report import default_out, write_report
            except ImportError as exc:
                raise RaydiffError(f"the analysis package is not importable ({exc}); reinstall raydiff") from None
            from .run_folder import check_writable_file

            try:  # by default next to the runs (inside the folder given), never the current folder
                dest = Path(args.out) if args.out else default_out(args.paths)
            except ValueError as exc:
                raise RaydiffError(str(exc)) from None
            target = dest / "report.html" if dest.is_dir() else dest
            check_writable_file(target, "--out")
            try:
                out = write_report(args.paths, target, title=args.title)
            except ValueError as exc:
                raise RaydiffError(str(exc)) from None
            print(f"report: {out}")
            return 0
        if args.command == "sample":
            from pathlib import Path

            from .metrics.sampling import sample_run
            from .run_folder import check_writable_file

            check_writable_file(Path(args.out), "--out")
            out, _ = sample_run(
                args.run_dir,
                args.n,
                args.out,
                args.sampler,
                args.steps,
                args.seed,
                class_label=args.class_label,
                guidance=args.guidance,
            )
            print(f"samples: {out}")
            return 0
        if args.command == "status":
            from pathlib import Path

            from .records import describe_folder, folder_state

            if not (Path(args.run_dir) / "status.json").is_file():
                raise RaydiffError(f"{args.run_dir!r} holds no status.json: not a run folder")
            info = describe_folder(Path(args.run_dir))
            if args.json:
                print(json.dumps(info, indent=1, default=str))
            else:
                for k, v in info.items():
                    print(f"{k}: {v}")
            return 0 if folder_state(Path(args.run_dir)) != "unknown" else 2
        if args.command == "eval":
            from .evaluate_later import eval_command

            print(json.dumps(eval_command(args.run_dir), indent=1, default=str))
            return 0
        if args.command == "audit":
            from .privacy.audit import audit_command

            print(json.dumps(audit_command(args.run_dir, args.device), indent=1))
            return 0
        if args.command == "data":
            from .datafetch import fetch

            print(fetch(args.dataset, args.root, url=args.url, md5=args.md5))
            return 0
        if args.command == "cluster":
            from .cluster import local_down, local_up

            if args.local_command == "up":
                local_up(args.dir, workers=args.workers, num_cpus=args.num_cpus)
            else:
                local_down(args.dir)
            return 0
        if args.command == "bench":
            if args.what == "stream":
                from .bench.stream import bench_stream

                bench_stream(args.max_updates, repeats=args.repeats)
            elif args.what == "engine":
                from .bench.engine import bench_engine

                bench_engine(args.clients, availability=args.availability)
            elif args.what == "aggregate":
                from .bench.aggregate import bench_aggregate

                bench_aggregate(args.size, strategy=args.strategy)
            elif args.what == "grouped":
                from .bench.grouped import bench_grouped

                bench_grouped(
                    args.groups,
                    preset=args.preset,
                    image_size=args.image_size,
                    batch=args.batch,
                    steps=args.local_steps,
                    device=args.device,
                    bf16=args.bf16,
                    repeats=args.repeats,
                )
            else:
                from .bench.overhead import bench_overhead

                bench_overhead(
                    args.actors,
                    batch=args.batch,
                    preset=args.preset,
                    device=args.device,
                    image_size=args.image_size,
                    bf16=args.bf16,
                    repeats=args.repeats,
                    local_steps=args.local_steps,
                )
            return 0
    except RaydiffError as exc:
        return _fail(str(exc))
    except InternalError as exc:  # a bug: the message carries the remote traceback; the folder says "failed"
        from .errors import strip_ansi

        print(f"raydiff: internal error: {strip_ansi(str(exc))}", file=sys.stderr)
        return 1
    except Exception as exc:  # disk full, a file-size limit, a name too long: the machine's, told as one paragraph
        from .errors import os_error_message

        msg = os_error_message(exc)
        if msg is None:
            raise  # a bug: its traceback is what a bug report needs
        return _fail(msg)
    except KeyboardInterrupt as exc:
        print("raydiff: interrupted", file=sys.stderr)
        return exit_code(getattr(exc, "signum", None))
    return 0


def _sweep_report(records: list[dict]) -> int:
    """The sweep's last words: counts, a table of failed runs with their reasons; exit 1 if any failed."""
    count = {s: sum(r["status"] == s for r in records) for s in ("ran", "skipped", "failed", "interrupted", "todo")}
    print(
        f"sweep: {len(records)} runs, {count['ran']} ran, {count['skipped']} skipped (already finished), "
        f"{count['failed']} failed" + (f", {count['todo']} not run" if count["todo"] else "")
    )
    failed = [r for r in records if r["status"] == "failed"]
    if failed:
        width = max(len(r["name"]) for r in failed)
        print("failed runs (rerun the sweep to retry them):")
        for r in failed:
            print(f"  {r['name']:<{width}}  {r.get('reason', '')}")
    stopped = [r for r in records if r["status"] == "interrupted"]
    if stopped:
        return exit_code(stopped[0].get("signal"))
    return 1 if failed else 0

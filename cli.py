"""The ``clumptool`` command line.

This module only parses options and calls library functions; every command is also a plain Python
function in its layer (``clumptool.aggregation``, ``clumptool.detection``, ...). Errors a user can fix
arrive as :class:`~clumptool.common.errors.ClumptoolError` and leave as ``Error: ...`` with exit code 2,
in one place (:class:`_Group`).

Each default, choice list and constraint of a library setting is defined once, in its command's options
class (SimulationConfig, AggregateOptions, TrainOptions/ModelSpec, EvaluateOptions, PredictOptions,
SelectOptions): the click options read their defaults and choices from those classes, and each command
builds its options object (which checks every value once, naming the option) and hands it to the library.
The options modules import no torch, so reading them here keeps start-up light.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
import threading
from pathlib import Path  # noqa: F401  (used by command sections)

import click
from click.core import ParameterSource
from tqdm import tqdm

from clumptool import __version__
from clumptool.active_learning.options import (
    AGGREGATES,
    DIVERSITY_METHODS,
    STRATEGIES,
    SelectOptions,
    UploadRequest,
)
from clumptool.active_learning.panoptes_session import DEFAULT_ENDPOINT, redact_url
from clumptool.aggregation.consensus import ConsensusConfig
from clumptool.aggregation.duplicates import ON_CONFLICT
from clumptool.aggregation.export import ReadOptions
from clumptool.aggregation.pipeline import METHODS as AGGREGATE_METHODS
from clumptool.aggregation.pipeline import AggregateOptions, aggregate
from clumptool.aggregation.report import format_summary
from clumptool.common.errors import ClumptoolError
from clumptool.common.matching import ASSIGNMENTS
from clumptool.common.outputs import check_output_location, staging_path
from clumptool.common.quiet import quiet_if
from clumptool.common.tables import TABLE_FORMATS
from clumptool.demo_options import DemoConfig
from clumptool.detection.options import (
    CATALOGUE_FORMATS,
    MATCH_METHODS,
    PRECISIONS,
    EvaluateOptions,
    MatchSettings,
    PredictOptions,
    TrainOptions,
)
from clumptool.detection.spec import ModelSpec
from clumptool.simulation.config import VOLUNTEER_MODELS, CrowdConfig, SimulationConfig, VolunteerModelConfig


class _Group(click.Group):
    """A click group that turns :class:`ClumptoolError` into a clean message and exit code 2, and a Ctrl-C into
    exit 130 whatever exception it surfaced as."""

    def invoke(self, ctx: click.Context):  # noqa: D401 - click API
        with _interrupts_noted() as interrupted:
            try:
                return super().invoke(ctx)
            except ClumptoolError as exc:
                click.echo(f"Error: {exc}", err=True)
                ctx.exit(2)
            except Exception:
                if not interrupted:
                    raise
                # a Ctrl-C that landed inside a C extension (e.g. while pyarrow imports ssl) can surface as another
                # exception (a TypeError, robustness tests): it is still the user's interrupt, not a crash
                click.echo("\nAborted: interrupted; run the command again", err=True)
                ctx.exit(130)


@contextlib.contextmanager
def _interrupts_noted():
    """Within: SIGINT raises KeyboardInterrupt as usual and is also noted in the yielded list (main thread and
    Python's default handler only; any other handler is left alone)."""
    noted: list[int] = []
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield noted
        return

    def on_sigint(signum, frame):
        noted.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield noted
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # keep the pipeline order, not alphabetical


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="clumptool")
def main() -> None:
    """clumptool: Galaxy Zoo: Clump Scout volunteer clicks -> consensus clumps -> a Zoobot Faster R-CNN
    clump detector -> the next batch of galaxies back on Zooniverse.

    Pipeline: simulate (or a real export) -> aggregate -> train -> evaluate / predict -> select-next-batch.
    `clumptool demo` runs all of it on a built-in simulated project.
    """


def _csv_ints(value: str | None) -> tuple[int, ...] | None:
    if value is None or value == "":
        return None
    try:
        return tuple(int(v) for v in value.split(",") if v.strip() != "")
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from exc


# ---------------------------------------------------------------------------------------------
# simulation commands (clumptool.simulation)
# ---------------------------------------------------------------------------------------------


_CROWD_HELP = ("Volunteer crowd: default (today's realistic crowd), bulge (a share marks the galaxy's centre), "
               "distractor (a careless minority marks stars, companions, noise peaks), sparse (6-10 volunteers "
               "per subject), confusion (odd/normal swapped often, per-volunteer offsets). See README.")
_VOLUNTEERS_HELP = (f"Volunteers per subject [default: {SimulationConfig.volunteers_per_subject}; the sparse crowd "
                    "draws {}-{}].".format(*CrowdConfig.preset("sparse").volunteers_range))


@main.command("simulate", short_help="Make a synthetic Clump Scout project: images, exports, truth.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--galaxies", type=int, default=SimulationConfig.galaxies, show_default=True,
              help="Number of galaxies (subjects).")
@click.option("--volunteers-per-subject", type=int, help=_VOLUNTEERS_HELP)
@click.option("--crowd", default=CrowdConfig.name, show_default=True, help=_CROWD_HELP)
@click.option("--image-size", type=int, default=SimulationConfig.image_size, show_default=True,
              help="Image side in pixels.")
@click.option("--cutout", type=int, help="Side of the central cutout a detector trains on, recorded in "
              "README.txt [default: half the image side, 200 px for 400 px images].")
@click.option("--seed", type=int, default=SimulationConfig.seed, show_default=True, help="Same seed, same bytes.")
@click.option("--clumpy-fraction", type=float, default=SimulationConfig.clumpy_fraction, show_default=True,
              help="Share of galaxies with clumps.")
@click.option("--volunteer-model", type=click.Choice(VOLUNTEER_MODELS), default=VolunteerModelConfig.name,
              show_default=True)
@click.option("--first-subject-id", type=int, default=SimulationConfig.first_subject_id, show_default=True)
@click.option("--no-images", is_flag=True, help="Only truth, subjects and classifications (fast, for big exports).")
@click.option("--quiet", is_flag=True)
def simulate_command(out: Path, galaxies: int, volunteers_per_subject: int | None, crowd: str, image_size: int,
                     cutout: int | None, seed: int, clumpy_fraction: float, volunteer_model: str,
                     first_subject_id: int, no_images: bool, quiet: bool) -> None:
    """Make a complete simulated Clump Scout project in --out.

    Writes images/<subject_id>.png, truth.csv, objects.csv, subjects.csv, classifications.csv (Zooniverse
    format), marks_truth.csv, volunteers_truth.csv, workflow.json, README.txt, preview.png and manifest.json,
    as one output set: an interrupted or failed run leaves an earlier project in --out as it was.

    Example: clumptool simulate --out sim/ --galaxies 500 --seed 1 --crowd bulge
    """
    from clumptool.simulation.project import simulate_project

    crowd_cfg = CrowdConfig.preset(crowd)
    config = SimulationConfig(galaxies=galaxies, **_given(volunteers_per_subject=volunteers_per_subject),
                              image_size=image_size, cutout=cutout, seed=seed, clumpy_fraction=clumpy_fraction,
                              volunteer_model=VolunteerModelConfig.preset(volunteer_model), crowd=crowd_cfg,
                              images=not no_images, first_subject_id=first_subject_id)
    check_output_location(out)
    try:
        with tqdm(total=galaxies if not no_images else None, desc="rendering galaxies", unit="img",
                  disable=quiet or no_images, leave=False) as bar:
            result = simulate_project(out, config, progress=bar.update)
    except KeyboardInterrupt:
        click.echo(f"Error: interrupted; nothing was published and {out} is as it was before this run "
                   "(run the command again to make the project)", err=True)
        sys.exit(130)
    if not quiet:
        click.echo(f"simulated {result.n_galaxies:,} galaxies, {result.n_clumps:,} clumps, "
                   f"{result.n_classifications:,} classifications by {result.n_volunteers:,} volunteers "
                   f"(crowd {crowd_cfg.name}) in {result.seconds:.1f} s -> {result.out_dir}")


def _given(**values: object) -> dict:
    """The options given on the command line (not None): the rest keep their options class's default."""
    return {k: v for k, v in values.items() if v is not None}


@main.command("simulate-volunteers", short_help="Simulated volunteers classify given subjects (offline labels).")
@click.option("--truth", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="truth.csv of a simulated project (subject_id, x, y, label[, peak_snr]).")
@click.option("--subjects", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="Subjects to classify (Zooniverse subjects export or a table with subject_id).")
@click.option("--objects", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="objects.csv of the simulated project (bulges, stars, companions the crowd may click) "
                   "[default: objects.csv beside --truth, if there].")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Classification export to write.")
@click.option("--volunteers-per-subject", type=int, help=_VOLUNTEERS_HELP)
@click.option("--crowd", default=CrowdConfig.name, show_default=True, help=_CROWD_HELP)
@click.option("--image-size", type=int, default=SimulationConfig.image_size, show_default=True)
@click.option("--seed", type=int, default=SimulationConfig.seed, show_default=True)
@click.option("--volunteer-model", type=click.Choice(VOLUNTEER_MODELS), default=VolunteerModelConfig.name,
              show_default=True)
@click.option("--start-classification-id", type=int, default=SimulationConfig.first_classification_id,
              show_default=True,
              help="First classification id (keep rounds distinct).")
def simulate_volunteers_command(truth: Path, subjects: Path, objects: Path | None, out: Path,
                                volunteers_per_subject: int | None, crowd: str, image_size: int, seed: int,
                                volunteer_model: str, start_classification_id: int) -> None:
    """Simulate volunteers classifying SUBJECTS and write a Zooniverse classification export.

    The export is written atomically: a failed or interrupted run leaves an earlier file at --out as it was.

    Example: clumptool simulate-volunteers --truth sim/truth.csv --subjects batch.csv --out round2.csv
    """
    from clumptool.simulation.project import check_export_target, simulate_volunteer_export

    config = SimulationConfig(**_given(volunteers_per_subject=volunteers_per_subject), image_size=image_size,
                              seed=seed, volunteer_model=VolunteerModelConfig.preset(volunteer_model),
                              crowd=CrowdConfig.preset(crowd),
                              first_classification_id=start_classification_id, images=False)
    check_export_target(out)
    n = simulate_volunteer_export(truth, subjects, out, config, objects_path=objects)
    click.echo(f"wrote {n:,} classifications -> {out}")

# ---------------------------------------------------------------------------------------------
# aggregation commands (clumptool.aggregation)
# ---------------------------------------------------------------------------------------------


@main.command("aggregate", short_help="Volunteer clicks (Zooniverse export) -> consensus clumps, skills, boxes.")
@click.argument("classifications", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--subjects", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Zooniverse subjects export (metadata: ra, dec, #fwhmImagePix ...).")
@click.option("--workflows", type=click.Path(dir_okay=False, path_type=Path),
              help="Zooniverse workflows export (Lab > Data Exports): each task's tool types and labels, for old "
                   "exports whose marks give only a tool index.")
@click.option("--workflow-id", type=int, help="Workflow to aggregate [default: the only one in the export].")
@click.option("--workflow-version", help="Version (e.g. 12.34, or 12 for all 12.x) [default: the newest].")
@click.option("--task", help="Drawing task id (e.g. T1) [default: the first task holding point marks].")
@click.option("--clump-tools", help="Tool indices that mark clumps, e.g. 0,1 [default: every point tool].")
@click.option("--odd-tools", default=",".join(map(str, ConsensusConfig.odd_tools)), show_default=True,
              help="Tool indices meaning 'odd clump'.")
@click.option("--method", type=click.Choice(AGGREGATE_METHODS), default=AggregateOptions.method,
              show_default=True, help="Volunteer-skill consensus, or the standard Zooniverse point reducers.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("aggregated"),
              show_default=True, help="Output folder.")
@click.option("--format", "table_format", type=click.Choice(TABLE_FORMATS), default=AggregateOptions.table_format,
              show_default=True, help="Table format of the outputs.")
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of <subject_id>.png to draw under the marks in overview.png.")
@click.option("--box-scale", type=float, default=AggregateOptions.box_scale, show_default=True,
              help="Box side in units of PSF FWHM.")
@click.option("--box-size", type=float, default=AggregateOptions.box_size, show_default=True,
              help="Box side in pixels where the FWHM is unknown.")
@click.option("--fwhm-column", default=AggregateOptions.fwhm_column, show_default=True,
              help="Subject metadata key holding the PSF FWHM in image pixels ('#' prefix optional).")
@click.option("--drop-central", type=float, default=AggregateOptions.drop_central, show_default=True,
              help="Drop marks within this many pixels of the image centre (bulge marks).")
@click.option("--fold-improbable", is_flag=True,
              help=f"Keep clumps with false_pos_prob > {AggregateOptions.improbable_threshold:g} as odd (label 2), the "
                   "paper's training-set convention.")
@click.option("--max-false-pos-prob", type=float, default=ConsensusConfig.max_false_pos_prob, show_default=True,
              help="Clumps above this false-positive probability are reported but get no training box.")
@click.option("--link-radius", type=float, default=ConsensusConfig.link_radius, show_default=True,
              help="Marks of different volunteers closer than this (px) may belong to one clump.")
@click.option("--min-volunteers", type=int, default=ConsensusConfig.min_volunteers, show_default=True,
              help="A clump needs marks by this many distinct volunteers (fewer on images with fewer viewers).")
@click.option("--central-radius", type=float, default=ConsensusConfig.central_radius,
              show_default=True, help="Clusters within this share of the image side of the centre are also "
              "weighed as the central source (bulge marks by the volunteers who mark centres); 0: off.")
@click.option("--retire-below", type=float, default=AggregateOptions.retire_below, show_default=True,
              help="A galaxy is finished (is_finished in the subjects table) when its consensus's expected errors "
              "(missed + false clumps + wrong labels) are below this, with --min-classifications or more. 0.2 "
              "spent 11-18% fewer classifications with --detections and --reference (2-12% without a detector) on "
              "bench/lean.py's crowds but lost 6% of the clumps on the loop bench's project: measure on your crowd "
              "first (README).")
@click.option("--min-classifications", type=int, default=AggregateOptions.min_classifications, show_default=True,
              help="A galaxy with fewer human classifications than this is never finished.")
@click.option("--retirement-limit", type=int, default=AggregateOptions.retirement_limit, show_default=True,
              help="The most classifications a galaxy gets (the workflow's retirement limit). An unfinished galaxy "
              "whose remaining classifications are not expected to settle it is marked is_stalled.")
@click.option("--reference", type=click.Path(path_type=Path),
              help="The --out folder of an earlier aggregate of galaxies that had their full crowd (e.g. the "
              "project that trained the detector): the stopping rule learns from it how spots' vote shares fall, "
              "and how often a spot one of the first k volunteers marked was real, instead of from galaxies only a "
              "few volunteers have seen yet.")
@click.option("--detections", type=click.Path(path_type=Path),
              help="A `predict` catalogue (parquet/csv/fits): the detector joins the crowd as one modelled annotator "
              "(reliability per score band learned from the volunteers; it can neither make a clump alone nor "
              "overturn a clear human consensus). Give --reference with it: where no single-click rate was "
              "measured, a single click the detector did not mark is judged as without a detector.")
@click.option("--eps", type=float, default=AggregateOptions.eps, show_default=True,
              help="DBSCAN eps (px), --method dbscan.")
@click.option("--min-samples", type=int, default=AggregateOptions.min_samples, show_default=True,
              help="DBSCAN/HDBSCAN min_samples.")
@click.option("--min-cluster-size", type=int, default=AggregateOptions.min_cluster_size, show_default=True,
              help="HDBSCAN min_cluster_size.")
@click.option("--strict", is_flag=True, help="Any unreadable row or mark is fatal (default: counted, reported).")
@click.option("--on-conflicting-duplicates", type=click.Choice(ON_CONFLICT),
              default=ReadOptions.on_conflicting_duplicates,
              show_default=True, help="Two different rows with one classification_id: refuse (error), or keep the "
              "later row (keep-last). Byte-identical copies of a row are always dropped and counted.")
@click.option("--per-subject", is_flag=True,
              help="Aggregate every subject on its own. By default a galaxy sent back to Zooniverse as a new subject "
              "(#galaxy_id in its metadata) is one consensus under its newest subject, with every volunteer counted "
              "once.")
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
@click.pass_context
def aggregate_command(ctx: click.Context, classifications: Path, subjects: Path | None, workflows: Path | None,
                      workflow_id: int | None,
                      workflow_version: str | None, task: str | None, clump_tools: str | None, odd_tools: str,
                      method: str, out: Path, table_format: str, images: Path | None, box_scale: float,
                      box_size: float, fwhm_column: str, drop_central: float, fold_improbable: bool,
                      max_false_pos_prob: float, link_radius: float, min_volunteers: int,
                      central_radius: float, retire_below: float, min_classifications: int,
                      retirement_limit: int, reference: Path | None, detections: Path | None, eps: float,
                      min_samples: int, min_cluster_size: int, strict: bool, on_conflicting_duplicates: str, per_subject: bool,
                      quiet: bool) -> None:
    """Aggregate a Zooniverse classification export into consensus clumps.

    Writes clumps, subjects, volunteers and boxes tables, summary.json and overview.png to --out.

    Example: clumptool aggregate classifications.csv --subjects subjects.csv --out aggregated/
    """
    odd = _option_ints("--odd-tools", odd_tools) or ()
    tools = _option_ints("--clump-tools", clump_tools)
    consensus = ConsensusConfig(link_radius=link_radius, odd_tools=odd, max_false_pos_prob=max_false_pos_prob,
                                min_volunteers=min_volunteers, central_radius=central_radius)
    options = AggregateOptions(
        read=ReadOptions(workflow_id=workflow_id, workflow_version=workflow_version, task=task, workflows=workflows,
                         clump_tools=tools, strict=strict, on_conflicting_duplicates=on_conflicting_duplicates,
                         merge_galaxies=not per_subject),
        check_odd_tools=ctx.get_parameter_source("odd_tools") is not click.core.ParameterSource.DEFAULT,
        method=method, consensus=consensus, eps=eps, min_samples=min_samples, min_cluster_size=min_cluster_size,
        box_scale=box_scale, box_size=box_size, fwhm_column=fwhm_column, drop_central=drop_central,
        fold_improbable=fold_improbable, table_format=table_format,
        retire_below=retire_below, min_classifications=min_classifications, retirement_limit=retirement_limit,
        reference=None if reference is None else str(reference),
    )
    with _byte_progress(classifications, "reading export", disable=quiet) as progress:
        result = aggregate(classifications, subjects, out, options, images=images, progress=progress,
                           log=None, detections=detections)
    if not quiet:
        click.echo(format_summary(result.summary))


def _option_ints(option: str, value: str | None) -> tuple[int, ...] | None:
    """Comma-separated tool indices of ``option``, or a message naming the option."""
    if value is None or value.strip() == "":
        return None
    try:
        return tuple(int(v) for v in value.split(",") if v.strip() != "")
    except ValueError:
        raise ClumptoolError(f"{option} {value!r}: give tool indices as comma-separated whole numbers, "
                             "e.g. 0,1") from None


def _byte_progress(path: Path, desc: str, disable: bool = False):
    """A tqdm progress bar over the bytes of a file (a context manager yielding an update callback)."""
    @contextlib.contextmanager
    def bar():
        total = path.stat().st_size if path.exists() else None
        with tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=disable, leave=False) as t:
            yield t.update

    return bar()

# ---------------------------------------------------------------------------------------------
# detection commands (clumptool.detection)
# ---------------------------------------------------------------------------------------------


def _crop_option(value: str | None) -> int | None:
    if value is None or str(value).lower() in ("none", "0", ""):
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise click.BadParameter(f"expected a side in pixels or 'none', got {value!r}") from exc


@main.command("train", short_help="Train the Faster R-CNN clump detector on consensus boxes.")
@click.option("--boxes", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Boxes table (parquet/csv: subject_id, x1, y1, x2, y2, label), e.g. aggregate's boxes.parquet.")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder of <subject_id>.png|.jpg|.fits images.")
@click.option("--subjects", type=click.Path(dir_okay=False, path_type=Path),
              help="Labelled subjects (aggregate's subjects table or a subjects export); galaxies without boxes "
                   "are negatives [default: every image in --images is labelled].")
@click.option("--backbone", default=ModelSpec.backbone, show_default=True,
              help="Zoobot/timm encoder (convnext_nano, convnext_tiny, efficientnet_b0, resnet18, resnet50, "
                   "maxvit_tiny ...) or torchvision_resnet50 (the paper's ImageNet baseline).")
@click.option("--weights", help="Backbone weights: 'zoobot' (the Zoobot encoder of --backbone from the hub), "
              "a hub name hf_hub:mwalmsley/zoobot-encoder-..., a local .safetensors/.pth/.ckpt file, 'imagenet' "
              "(torchvision_resnet50), or none [default: random initialisation].")
@click.option("--image-size", type=int, default=ModelSpec.image_size, show_default=True,
              help="Working size fed to the network (px).")
@click.option("--crop", default=str(ModelSpec.crop), show_default=True,
              help="Central crop side in original pixels before resizing, or 'none' for the whole image.")
@click.option("--in-channels", type=int, default=ModelSpec.in_channels, show_default=True,
              help="Input channels (1, 3 or N FITS bands).")
@click.option("--fits-bands", help="FITS bands to stack as channels, e.g. 1,2,3.")
@click.option("--anchor-sizes", help="4 square anchor sides in working px for strides 4/8/16/32 [default: "
              f"{','.join(map(str, ModelSpec().anchor_sizes))}].")
@click.option("--box-dropout", type=float, default=ModelSpec.box_dropout, show_default=True,
              help="Dropout in the box head (> 0 enables MC dropout for active learning).")
@click.option("--trainable-stages", type=int,
              help="Train only the last N of the 4 backbone stages [default: all].")
@click.option("--freeze-backbone", is_flag=True, help="Freeze the whole backbone (= --trainable-stages 0).")
@click.option("--epochs", type=int, default=TrainOptions.epochs, show_default=True)
@click.option("--batch-size", type=int, default=TrainOptions.batch_size, show_default=True)
@click.option("--lr", type=float, default=TrainOptions.lr, show_default=True,
              help="AdamW learning rate (warm-up, cosine decay).")
@click.option("--weight-decay", type=float, default=TrainOptions.weight_decay, show_default=True)
@click.option("--val-fraction", type=float, default=TrainOptions.val_fraction, show_default=True,
              help="Fraction of galaxies held out for validation (split by galaxy, reproducible by --seed).")
@click.option("--patience", type=int, default=TrainOptions.patience, show_default=True,
              help="Stop after this many epochs without a better validation F1 (0 = never).")
@click.option("--max-minutes", type=float, help="Stop training after this many minutes.")
@click.option("--devices", default=TrainOptions.devices, show_default=True,
              help="Number of devices (or a list like 0,1).")
@click.option("--num-nodes", type=int, default=TrainOptions.num_nodes, show_default=True)
@click.option("--strategy", default=TrainOptions.strategy, show_default=True,
              help="auto, ddp, ddp_spawn ... (Lightning strategies).")
@click.option("--precision", type=click.Choice(PRECISIONS), default=TrainOptions.precision, show_default=True,
              help="Mixed precision needs a GPU.")
@click.option("--resume", type=click.Path(dir_okay=False, path_type=Path),
              help="Continue exactly from a checkpoint: .OUT.partial/checkpoints/last.ckpt after Ctrl-C (the "
                   "command is printed), or OUT/checkpoints/last.ckpt to extend a finished run with more --epochs. "
                   "Model and data settings come from it.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("model"), show_default=True,
              help="Output folder (model, checkpoints, logs, training.png), published as a whole when training "
                   "succeeds; until then it is built in the hidden sibling .OUT.partial and a previous model "
                   "there stays as it was.")
@click.option("--seed", type=int, default=TrainOptions.seed, show_default=True)
@click.option("--workers", type=int, help="DataLoader worker processes [default: 0 on CPU, up to 8 on GPU].")
@click.option("--cache", is_flag=True, help="Decode all images once and keep them in memory.")
@click.option("--accept-empty-model", is_flag=True,
              help="Publish the model even when it finds no clump on the validation galaxies at any score "
                   "(otherwise such a run exits 2 and leaves --out untouched).")
@click.option("--include-in-progress", is_flag=True,
              help="Also train on the galaxies --subjects (aggregate's table) marks in_progress: not finished and "
                   "fewer than half the retirement limit's classifications, so volunteers are still at them and their "
                   "consensus is no label yet (left out by default, with a note).")
@click.option("--quiet", is_flag=True, help="No progress bar, summary or Lightning messages (errors still print).")
@click.pass_context
def train_command(ctx: click.Context, boxes: Path, images: Path, subjects: Path | None, backbone: str, weights: str | None,
                  image_size: int, crop: str, in_channels: int, fits_bands: str | None, anchor_sizes: str | None,
                  box_dropout: float, trainable_stages: int | None, freeze_backbone: bool, epochs: int,
                  batch_size: int, lr: float, weight_decay: float, val_fraction: float, patience: int,
                  max_minutes: float | None, devices: str, num_nodes: int, strategy: str, precision: str,
                  resume: Path | None, out: Path, seed: int, workers: int | None, cache: bool,
                  accept_empty_model: bool, include_in_progress: bool, quiet: bool) -> None:
    """Train a clump detector: Zoobot/timm encoder + FPN + Faster R-CNN.

    Writes model.safetensors + model.json (the best model by validation F1, with the score threshold chosen
    on the validation galaxies), checkpoints/, logs/metrics.csv, training.png, split.csv and training.json to
    --out. Exit 2: a bad option or input (nothing written), or a model that found nothing (see
    --accept-empty-model); exit 130: Ctrl-C (the resume command is printed).

    Example: clumptool train --boxes aggregated/boxes.parquet --subjects aggregated/subjects.parquet
    --images project/images --out model/
    """
    from clumptool.detection.train import (
        TrainingInterrupted,
        check_resume,
        summarise,
        train,
        training_warnings,
    )

    options = TrainOptions(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                           val_fraction=val_fraction, patience=patience, max_minutes=max_minutes, devices=devices,
                           num_nodes=num_nodes, strategy=strategy, precision=precision, seed=seed, workers=workers,
                           cache=cache, accept_empty=accept_empty_model, include_in_progress=include_in_progress)
    model = {"backbone": backbone, "image_size": image_size, "crop": _crop_option(crop),
             "in_channels": in_channels, "fits_bands": list(_csv_ints(fits_bands) or []) or None,
             "anchor_sizes": list(_csv_ints(anchor_sizes) or []) or None, "box_dropout": box_dropout,
             "trainable_stages": 0 if freeze_backbone else trainable_stages}
    if resume is not None:
        values = {**model, "seed": seed, "batch_size": batch_size, "val_fraction": val_fraction, "lr": lr,
                  "weight_decay": weight_decay}
        given = {k: v for k, v in values.items()
                 if ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, None)
                 or (k == "trainable_stages" and freeze_backbone)}
        check_resume(resume, given)
    try:
        result = train(boxes, images, out, options, subjects=subjects, weights=weights, resume=resume,
                       progress=not quiet, **model)
    except TrainingInterrupted as exc:
        click.echo(f"Interrupted: {exc}", err=True)
        if exc.checkpoint is not None:
            click.echo(f"  {_resume_command(exc.checkpoint)}", err=True)
        ctx.exit(130)
    if result.is_global_zero:
        if not quiet:
            click.echo(summarise(result))
        for line in training_warnings(result):
            click.echo(line, err=True)


def _resume_command(checkpoint: Path) -> str:
    """The command line that resumes an interrupted run: this one with --resume CHECKPOINT."""
    argv = sys.argv[1:] if "train" in sys.argv[1:] else ["train", "..."]
    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--resume":
            skip = True
            continue
        if not a.startswith("--resume="):
            args.append(a)
    return "clumptool " + shlex.join([*args, "--resume", str(checkpoint)])




def _interrupted(out: Path, note: str = ""):
    """Ctrl-C: say that nothing was published and the previous outputs are as they were; exit 130."""
    @contextlib.contextmanager
    def ctx():
        try:
            yield
        except KeyboardInterrupt:
            click.echo(f"Interrupted: nothing was published; the previous outputs in {out} (if any) are unchanged. "
                       "Rerun the same command to produce them." + (f" {note}" if note else ""), err=True)
            sys.exit(130)

    return ctx()


@main.command("evaluate", short_help="Completeness, purity and mAP of a trained detector against true clumps.")
@click.option("--model", "model_path", type=click.Path(path_type=Path), required=True,
              help="Model folder written by 'clumptool train' (or a .ckpt beside its model.json).")
@click.option("--boxes", "--truth", "truth", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True,
              help="True clumps: a boxes table (subject_id, x1, y1, x2, y2, label), e.g. aggregate's boxes, or a "
                   "point table (subject_id, x, y, label, fwhm_px), e.g. simulate's truth.csv.")
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Folder of <subject_id>.png; every image is evaluated (no truth rows = no clumps).")
@click.option("--subjects", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Evaluate only these subjects (any table with subject_id, e.g. a test split); each needs an image.")
@click.option("--allow-missing-images", is_flag=True,
              help="Go on when subjects listed in --subjects have no image (they are counted in metrics.json).")
@click.option("--allow-no-truth", is_flag=True,
              help="Go on when no evaluated galaxy has a true clump (completeness is then undefined).")
@click.option("--match", "method", type=click.Choice(MATCH_METHODS), default=MatchSettings.method,
              show_default=True, help="centre: box centres within --max-dist; iou: box IoU >= --iou.")
@click.option("--iou", "iou_thresh", type=float, default=MatchSettings.iou_thresh,
              show_default=True, help="IoU for --match iou.")
@click.option("--max-dist", "--match-radius", "max_dist", type=float,
              help="Centre distance in px for --match centre [default: one PSF FWHM = true box side / "
                   f"{MatchSettings.box_scale:g}].")
@click.option("--assignment", type=click.Choice(ASSIGNMENTS), default=MatchSettings.assignment, show_default=True,
              help="One-to-one matching: greedy by score (COCO) or Hungarian (most matches).")
@click.option("--score-threshold", type=float,
              help="Report every class at this score threshold [default: the model's operating threshold, chosen "
                   "by train on its validation galaxies; 0.5 for models that record none]. The threshold best on "
                   "the evaluated galaxies is reported beside it, labelled optimistic.")
@click.option("--nms-iou", type=float, default=EvaluateOptions.nms_iou, show_default=True,
              help="Class-agnostic NMS before scoring, as the paper (0 = off).")
@click.option("--min-score", type=float, default=EvaluateOptions.min_score, show_default=True,
              help="Detections below this score are dropped; the curves start here.")
@click.option("--batch-size", type=int, default=EvaluateOptions.batch_size, show_default=True)
@click.option("--device", help="Where the detector runs, as predict's --devices: auto (every GPU, else 1 CPU "
                                "process), cpu, cuda, a count N (N CPU processes without a GPU) or GPU indices 0,1 "
                                "[default: auto].")
@click.option("--num-nodes", type=int, default=EvaluateOptions.num_nodes, show_default=True,
              help="Nodes of a multi-node run (SLURM srun or torchrun, as for train and predict).")
@click.option("--strategy", "lightning_strategy", default=EvaluateOptions.strategy, show_default=True,
              help="Lightning strategy (auto, ddp ...).")
@click.option("--precision", type=click.Choice(PRECISIONS), default=EvaluateOptions.precision, show_default=True,
              help="Mixed precision needs a GPU.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("evaluation"),
              show_default=True, help="Folder for metrics.json, pr_curve.png and manifest.json (one set).")
@click.option("--quiet", is_flag=True, help="No progress bar, table or warnings (errors are always printed).")
def evaluate_command(model_path: Path, truth: Path, images: Path, subjects: Path | None, allow_missing_images: bool,
                     allow_no_truth: bool, method: str, iou_thresh: float, max_dist: float | None, assignment: str,
                     score_threshold: float | None, nms_iou: float, min_score: float, batch_size: int,
                     device: str | None, num_nodes: int, lightning_strategy: str, precision: str, out: Path,
                     quiet: bool) -> None:
    """Score a detector as the paper did: completeness (found true clumps / true clumps) and purity
    (correct detections / detections), per class and class-agnostic, over score thresholds, plus COCO mAP.

    Only the central crop the model sees is scored. Writes metrics.json, pr_curve.png and manifest.json to --out.

    Example: clumptool evaluate --model runs/model --boxes sim/truth.csv --images sim/images --out eval/
    """
    from clumptool.detection.evaluate import check_output_folder, evaluate_model

    options = EvaluateOptions(
        settings=MatchSettings(method=method, iou_thresh=iou_thresh, max_dist=max_dist, assignment=assignment),
        score_threshold=score_threshold, nms_iou=nms_iou, min_score=min_score, batch_size=batch_size,
        device=device, num_nodes=num_nodes, strategy=lightning_strategy, precision=precision,
        allow_missing_images=allow_missing_images, allow_no_truth=allow_no_truth)
    check_output_folder(out, "evaluate")
    with _interrupted(out), _quiet_warnings(quiet):
        report = evaluate_model(model_path, truth, images, out, options, subjects=subjects, progress=not quiet)
    if report.is_global_zero and not quiet:  # (another process of a multi-process run wrote nothing)
        click.echo(report.format_table())
        click.echo(f"Wrote {report.metrics_path} and {report.plot_path}")


@main.command("predict", short_help="Run a trained detector over images -> a clump catalogue (Parquet, FITS, ...).")
@click.option("--model", "model_path", type=click.Path(path_type=Path), required=True,
              help="Model folder written by 'clumptool train' (or a .ckpt beside its model.json).")
@click.option("--images", type=click.Path(exists=True, path_type=Path), required=True,
              help="Folder of <subject_id>.png (or .jpg/.fits), or a table (Parquet/CSV) of image paths: column "
                   "image_path (relative to the table), optional subject_id, ra, dec, arcsecPerSide, fwhmImagePix.")
@click.option("--subjects", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Subjects export (ra, dec, arcsecPerSide, fwhmImagePix): only these galaxies (each needs an "
                   "image), with sky positions [default: every image; sky columns from the image table, else NaN].")
@click.option("--allow-missing-images", is_flag=True,
              help="Go on when listed galaxies have no image (counted in the summary and metadata).")
@click.option("--score-threshold", type=float,
              help="Keep detections scoring at least this [default: the model's operating threshold, chosen by "
                   "train on its validation galaxies; 0.5 for models that record none].")
@click.option("--nms-iou", type=float, default=PredictOptions.nms_iou, show_default=True,
              help="Class-agnostic NMS IoU, as the paper (0 = off).")
@click.option("--drop-central", type=float, default=PredictOptions.drop_central, show_default=True,
              help="Drop detections within this many px of the image centre (the bulge).")
@click.option("--batch-size", type=int, default=PredictOptions.batch_size, show_default=True)
@click.option("--devices", default=PredictOptions.devices, show_default=True,
              help="auto (every GPU, else 1 CPU process), cpu, cuda, a count N (N GPUs; N CPU processes without "
                   "a GPU, DDP over gloo) or GPU indices such as 0,1. Processes per node under torchrun/SLURM.")
@click.option("--num-nodes", type=int, default=PredictOptions.num_nodes, show_default=True,
              help="Nodes of a multi-node run (launched by SLURM srun or torchrun, as for train).")
@click.option("--strategy", default=PredictOptions.strategy, show_default=True,
              help="Lightning strategy (auto, ddp, ddp_spawn ...).")
@click.option("--precision", type=click.Choice(PRECISIONS), default=PredictOptions.precision, show_default=True,
              help="Mixed precision needs a GPU.")
@click.option("--shard-size", type=int,
              help="Images per resumable shard [default: up to 1000, at least 64 shards when possible].")
@click.option("--num-workers", type=int, default=PredictOptions.num_workers, show_default=True,
              help="Image-loading worker processes per device.")
@click.option("--overlay", "n_overlay", type=int, default=PredictOptions.n_overlay, show_default=True,
              help="Galaxies drawn in predictions.png (0 = none).")
@click.option("--format", "fmt", type=click.Choice(tuple(CATALOGUE_FORMATS)),
              help="Catalogue format when --out is a folder [default: from the --out suffix, else parquet].")
@click.option("--out", type=click.Path(path_type=Path), default=Path("catalogue"), show_default=True,
              help="Output folder (catalogue.parquet, predictions.png, manifest.json, published together), or "
                   "FOLDER/NAME.parquet|.fits|.ecsv|.vot to name the catalogue and its format (FOLDER must be new, "
                   "empty or a previous predict output).")
@click.option("--quiet", is_flag=True, help="No progress bar, summary or warnings (errors are always printed).")
def predict_command(model_path: Path, images: Path, subjects: Path | None, allow_missing_images: bool,
                    score_threshold: float | None, nms_iou: float, drop_central: float, batch_size: int, devices: str,
                    num_nodes: int, strategy: str, precision: str, shard_size: int | None, num_workers: int,
                    n_overlay: int, fmt: str | None, out: Path, quiet: bool) -> None:
    """Detect clumps in every galaxy image and write one catalogue row per clump, in the columns of the
    paper's published catalogue (clump_id, clump_label_id/name, clump_score, clump_centre_px_x/y,
    clump_px_x1/x2/y1/y2, clump_centre_ra/dec, galaxy_ra/dec, FWHM_r_px, ..., model_version), with units and
    the model version and score threshold in the table metadata.

    Runs on Lightning: one CPU, N CPU processes, one or many GPUs, many nodes. The work is cut into shards;
    an interrupted or killed run resumes where it stopped when the same command is run again.

    Example: clumptool predict --model runs/model --images sim/images --subjects sim/subjects.csv --out catalogue/
    """
    from clumptool.detection.predict import SHARDS_DIR, check_out, predict_catalogue

    options = PredictOptions(score_threshold=score_threshold, nms_iou=nms_iou, drop_central=drop_central,
                             batch_size=batch_size, devices=devices, num_nodes=num_nodes, strategy=strategy,
                             precision=precision, shard_size=shard_size, num_workers=num_workers,
                             n_overlay=n_overlay, fmt=fmt, allow_missing_images=allow_missing_images)
    folder, _ = check_out(out, fmt)
    note = (f"Finished shards are kept in {staging_path(folder) / SHARDS_DIR}: rerun the same command to resume "
            "from them.")
    with _interrupted(folder, note), _quiet_warnings(quiet):
        result = predict_catalogue(model_path, images, out, options, subjects=subjects, progress=not quiet)
    if result.is_global_zero and not quiet:
        click.echo(result.summary())

# ---------------------------------------------------------------------------------------------
# active-learning commands (clumptool.active_learning)
# ---------------------------------------------------------------------------------------------


@main.command("select-next-batch", short_help="Choose the galaxies volunteers should classify next (active learning).")
@click.option("--model", "model_path", type=click.Path(path_type=Path), required=True,
              help="Model folder written by 'clumptool train' (or a .ckpt beside its model.json).")
@click.option("--pool", type=click.Path(path_type=Path), required=True,
              help="Unlabelled galaxies: a folder of <galaxy_id>.png, or a table (galaxy_id or subject_id, "
                   "image_path, and metadata such as ra/dec to carry into the manifest).")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path),
              help="Image folder for a --pool table without an image column.")
@click.option("--labelled", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Already labelled galaxies to leave out (repeatable): any table with galaxy_id or subject_id "
                   "(aggregate's boxes/subjects, a subjects export) or a classification export (subject_ids).")
@click.option("--n", "n", type=int, default=SelectOptions.n, show_default=True, help="Galaxies chosen by the strategy.")
@click.option("--strategy", type=click.Choice(tuple(STRATEGIES)), default=SelectOptions.strategy, show_default=True,
              help="tta-*: 8 flips/rotations, boxes mapped back and matched (BALD, detection frequency, "
                   "localisation); mc-bald: MC dropout (model needs --box-dropout); entropy: one pass; random.")
@click.option("--aggregate", type=click.Choice(AGGREGATES), default=SelectOptions.aggregate, show_default=True,
              help="Per-galaxy value from its boxes' uncertainties (plus the borderline-empty term).")
@click.option("--topk", type=int, default=SelectOptions.topk, show_default=True, help="k for --aggregate topk.")
@click.option("--candidates", type=int, help="Most uncertain galaxies kept before the diversity step [default: 5 x n].")
@click.option("--diversity", type=click.Choice(DIVERSITY_METHODS), default=SelectOptions.diversity,
              show_default=True, help="Thin the candidates to n on backbone embeddings.")
@click.option("--random-control", type=int, default=SelectOptions.random_control, show_default=True,
              help="Random pool galaxies added with control=True (measures what active learning gains).")
@click.option("--include-unfinished", type=click.Path(dir_okay=False, path_type=Path),
              help="Aggregate's subjects table: labelled galaxies with is_finished == False are sent back for more "
                   "volunteers, riskiest first (their images must be in the pool); stalled ones and those the "
                   "workflow still shows (awaiting_volunteers) are not.")
@click.option("--max-unfinished", type=int, help="At most this many unfinished galaxies [default: n].")
@click.option("--passes", type=int, default=SelectOptions.passes, show_default=True,
              help="Monte Carlo dropout passes (mc-bald).")
@click.option("--score-threshold", type=float, default=SelectOptions.score_thresh, show_default=True,
              help="Detector score floor while scoring (low, so borderline boxes count).")
@click.option("--batch-size", type=int, default=SelectOptions.batch_size, show_default=True)
@click.option("--workers", type=int, default=SelectOptions.workers, show_default=True,
              help="Image-decoding worker processes.")
@click.option("--device", help="Where the detector runs, as predict's --devices: auto (every GPU, else 1 CPU "
                                "process), cpu, cuda, a count N (N CPU processes without a GPU) or GPU indices 0,1 "
                                "[default: auto].")
@click.option("--num-nodes", type=int, default=SelectOptions.num_nodes, show_default=True,
              help="Nodes of a multi-node scoring run (SLURM srun or torchrun).")
@click.option("--lightning-strategy", default=SelectOptions.lightning_strategy, show_default=True,
              help="Lightning strategy for scoring (auto, ddp ...); --strategy is the active-learning one.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=SelectOptions.precision, show_default=True,
              help="Mixed precision needs a GPU.")
@click.option("--seed", type=int, default=SelectOptions.seed, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("next-batch"),
              show_default=True, help="Folder for selection.parquet, manifest.csv, cutouts/, selection.png.")
@click.option("--state", type=click.Path(file_okay=False, path_type=Path),
              help="Folder of the ledger (al_ledger.sqlite) that remembers every round's picks and uploads "
                   "[default: shared by all rounds of the project and workflow: $CLUMPTOOL_STATE_DIR (else "
                   "~/.local/state/clumptool)/<endpoint host>/project-<id>-workflow-<id>/; without "
                   "--project-id .../local/]. Never inside --out.")
@click.option("--round", "round_name", help="Round name (also the subject set's identity in the ledger) "
              "[default: al-<model version>]. Re-running a round reuses its batch.")
@click.option("--upload", is_flag=True, help="Upload the batch to Zooniverse (credentials from PANOPTES_* env).")
@click.option("--dry-run", is_flag=True, help="With --upload: select and write the batch, but neither talk to "
              "Zooniverse nor record the round in the ledger (its galaxies stay in the pool for later rounds).")
@click.option("--project-id", type=int, help="Zooniverse project id (--upload).")
@click.option("--workflow-id", type=int, help="Workflow to link the new subject set to (--upload; optional).")
@click.option("--subject-set-name", help="Subject set for this round [default: the round name].")
@click.option("--endpoint", default=UploadRequest.endpoint, show_default=True,
              help="Panoptes endpoint (https; no user:password@, credentials come from PANOPTES_* only).")
@click.option("--allow-reupload", is_flag=True,
              help="Let galaxies that earlier rounds already uploaded be chosen and uploaded again.")
@click.option("--allow-fewer", is_flag=True,
              help="When fewer than --n + --random-control galaxies are left, take what is left (and say so).")
@click.option("--quiet", is_flag=True, help="No progress bars or summary (errors are always printed).")
def select_next_batch_command(model_path: Path, pool: Path, images: Path | None, labelled: tuple[Path, ...], n: int,
                              strategy: str, aggregate: str, topk: int, candidates: int | None, diversity: str,
                              random_control: int, include_unfinished: Path | None, max_unfinished: int | None,
                              passes: int, score_threshold: float, batch_size: int, workers: int,
                              device: str | None, num_nodes: int, lightning_strategy: str, precision: str,
                              seed: int, out: Path, state: Path | None, round_name: str | None, upload: bool, dry_run: bool, project_id: int | None, workflow_id: int | None,
                              subject_set_name: str | None, endpoint: str, allow_reupload: bool,
                              allow_fewer: bool, quiet: bool) -> None:
    """Score every pool galaxy's uncertainty with the trained detector, keep the most uncertain, spread
    them out on backbone embeddings, add random controls, and write a Zooniverse-ready batch.

    Writes selection.parquet, pool_scores.parquet, manifest.csv + cutouts/ (panoptes CLI convention) and
    selection.png to --out, and records the batch in the ledger so later rounds skip it and a re-run resumes.

    Example: clumptool select-next-batch --model model/ --pool sim/images --labelled agg/subjects.parquet
    --n 100 --out round1/ --upload --project-id 1234 --workflow-id 5678

    Exit 0: the selection is written (and, with --upload, every galaxy is linked on Zooniverse). Exit 2: an
    error, printed even with --quiet; a failed upload leaves the selection complete in --out, and the same
    command resumes the upload without uploading anything twice.
    """
    from clumptool.active_learning.select import select_next_batch

    options = SelectOptions(n=n, strategy=strategy, aggregate=aggregate, topk=topk, candidates=candidates,
                            diversity=diversity, random_control=random_control, max_unfinished=max_unfinished,
                            passes=passes, score_thresh=score_threshold, batch_size=batch_size, workers=workers,
                            seed=seed, device=device, allow_fewer=allow_fewer, num_nodes=num_nodes,
                            lightning_strategy=lightning_strategy, precision=precision)
    request = None
    if upload or dry_run:
        if project_id is None and not dry_run:
            raise ClumptoolError("--upload needs --project-id (the Zooniverse project to upload to; usually with "
                                 "--workflow-id)")
        request = UploadRequest(project_id=project_id or 0, workflow_id=workflow_id,
                                subject_set_name=subject_set_name, endpoint=endpoint, dry_run=dry_run,
                                allow_reupload=allow_reupload)
    elif endpoint != UploadRequest.endpoint or project_id is not None:
        raise ClumptoolError(f"--endpoint {redact_url(endpoint)} / --project-id are used only with --upload "
                             "(or --dry-run); add --upload, or leave them out")
    try:
        with _quiet_warnings(quiet):
            result = select_next_batch(
                model_path, pool, out, options, images=images, labelled=list(labelled), state=state,
                round_name=round_name, include_unfinished=include_unfinished, upload=request, progress=not quiet,
            )
    except KeyboardInterrupt:
        click.echo(f"\nInterrupted: {out} holds either its previous outputs or this run's whole selection, never "
                   "a mix; run the same command again to finish (an upload resumes where it stopped, nothing "
                   "is uploaded twice).", err=True)
        sys.exit(130)
    failed = result.upload is not None and not result.upload.ok
    if result.is_global_zero and not quiet:  # (another process of a multi-process run wrote nothing)
        click.echo(result.format(include_upload=not failed))
    if failed:
        raise ClumptoolError(f"the upload is incomplete (the selection itself is complete in {out}):\n"
                             f"{result.upload.format()}")


def _quiet_warnings(quiet: bool):
    """With --quiet, library warnings (Lightning, torchvision, ...) are not printed; errors still are."""
    return quiet_if(quiet)


@main.command("fake-panoptes", short_help="Serve a local fake Zooniverse (Panoptes) API for demos and tests.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port on 127.0.0.1 (0: any free port).")
@click.option("--state", "state_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder keeping subjects, images and the request log across restarts [default: in memory].")
@click.option("--project-id", type=int, default=1234, show_default=True, help="The project it knows.")
@click.option("--workflow-id", type=int, default=5678, show_default=True, help="The project's workflow.")
@click.option("--subject-limit", type=click.IntRange(0), default=10_000, show_default=True,
              help="The user's subject quota.")
@click.option("--fault", "faults", multiple=True, metavar="JSON",
              help='Inject a fault (repeatable), e.g. \'{"method": "POST", "path": "^/api/subjects$", "nth": 4, '
                   '"status": 403, "message": "User has uploaded 3 subjects of 3 maximum"}\'; '
                   'or {"path": "^/blob/", "nth": 2, "drop": true} to drop a media upload.')
@click.option("--export", "export", metavar="[WORKFLOW_ID=]CSV",
              help="Serve this classification export as the workflow's (its subjects join the workflow), to try "
                   "fetch-export and retire by hand.")
def fake_panoptes_command(port: int, state_dir: Path | None, project_id: int, workflow_id: int,
                          subject_limit: int, faults: tuple[str, ...], export: str | None) -> None:
    """Serve a loopback fake of the Zooniverse API in the foreground until Ctrl-C.

    It accepts the login clumpbot / s3cret (or OAuth client clumptool-app / app-s3cret) and prints its URL;
    pass that URL as --endpoint to an upload. Only for local testing: it listens on 127.0.0.1 only.

    Example: clumptool fake-panoptes --port 8642 --state fake-zooniverse/

    Example: clumptool fake-panoptes --port 8642 --export 5678=demo-output/zooniverse-export/classifications.csv
    """
    from clumptool.testing.fake_panoptes import FakePanoptes, fault_from_dict

    try:
        specs = [fault_from_dict(json.loads(f)) for f in faults]
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(str(exc), param_hint="--fault") from exc
    if state_dir is not None:
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ClumptoolError(f"--state {state_dir}: cannot create the folder ({exc.strerror or exc}); choose "
                                 "another folder") from exc
        if not os.access(state_dir, os.W_OK | os.X_OK):
            raise ClumptoolError(f"--state {state_dir}: the folder is not writable; choose another folder")
    server = FakePanoptes(port=port, state_dir=state_dir, projects={project_id: (workflow_id,)},
                          subject_limit=subject_limit)
    served = _serve_export(server, export, workflow_id) if export else ""
    server.state.faults.extend(specs)

    def ready(url: str) -> None:
        click.echo(f"fake Panoptes API at {url} (project {project_id}, workflow {workflow_id}); "
                   f"login clumpbot / s3cret;{served} Ctrl-C to stop", err=False)
        sys.stdout.flush()

    server.serve_forever(ready=ready)
    click.echo(f"stopped after {len(server.state.requests)} requests"
               + (f"; state kept in {state_dir}" if state_dir else ""))


def _serve_export(server, spec: str, workflow_id: int) -> str:
    """``--export [WORKFLOW_ID=]CSV``: publish the file as the workflow's classification export; what to print."""
    wid, sep, csv_path = spec.partition("=")
    if not sep or not wid.strip().isdigit():
        wid, csv_path = str(workflow_id), spec
    if int(wid) != workflow_id:
        raise ClumptoolError(f"--export {spec}: this server serves workflow {workflow_id} only; give --workflow-id "
                             f"{wid}, or --export {workflow_id}={csv_path}")
    try:
        data = Path(csv_path).read_bytes()
    except OSError as exc:
        raise ClumptoolError(f"--export {spec}: cannot read {csv_path} ({exc.strerror or exc}); give the path of a "
                             "classification export (e.g. demo-output/zooniverse-export/classifications.csv)") from exc
    try:
        added = server.serve_classification_export(workflow_id, data)
    except ValueError as exc:
        raise ClumptoolError(f"--export {spec}: {csv_path}: {exc}; give a Zooniverse classification export "
                             "(the CSV with a subject_ids column)") from exc
    return (f" serving {csv_path} as workflow {workflow_id}'s classification export ({len(added)} new subjects "
            "in the workflow);")


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------


@main.command("demo", short_help="Run the whole pipeline on a built-in simulated project.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"),
              show_default=True, help="Folder for every stage's outputs.")
@click.option("--galaxies", type=int, default=DemoConfig.galaxies, show_default=True,
              help="Size of the simulated project.")
@click.option("--seed", type=int, default=DemoConfig.seed, show_default=True)
def demo_command(out: Path, galaxies: int, seed: int) -> None:
    """Simulate a Clump Scout project and run every clumptool stage on it, printing where the results are.

    Example: clumptool demo --out demo-output
    """
    from clumptool.demo import run_demo

    run_demo(out, galaxies=galaxies, seed=seed, log=click.echo)


# ---------------------------------------------------------------------------------------------
# the loop on Zooniverse: fetch-export and retire (clumptool.active_learning)
# ---------------------------------------------------------------------------------------------


@main.command("fetch-export", short_help="Download a workflow's classification export (and subjects, workflows).")
@click.option("--workflow-id", type=int, required=True, help="Workflow whose classifications to fetch.")
@click.option("--project-id", type=int, help="Its project (checked; default: the workflow's own project).")
@click.option("--generate", is_flag=True, help="Ask Zooniverse for a fresh export first and wait for it.")
@click.option("--wait-minutes", type=float,
              help="Wait this long for an export being generated [default: 60 with --generate, else 0].")
@click.option("--subjects", "with_subjects", is_flag=True, help="Also the project's subjects export (subjects.csv).")
@click.option("--workflows", "with_workflows", is_flag=True,
              help="Also the project's workflows export (workflows.csv).")
@click.option("--incremental", "--since-last", "incremental", is_flag=True,
              help="Merge into the classifications.csv already in --out: add only classifications it lacks.")
@click.option("--endpoint", default=DEFAULT_ENDPOINT, show_default=True,
              help="Panoptes endpoint (https; credentials come from PANOPTES_* only).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for classifications.csv (subjects.csv, workflows.csv) and manifest.json.")
@click.option("--quiet", is_flag=True, help="No progress bar or summary (errors are always printed).")
def fetch_export_command(workflow_id: int, project_id: int | None, generate: bool, wait_minutes: float | None,
                         with_subjects: bool, with_workflows: bool, incremental: bool, endpoint: str, out: Path,
                         quiet: bool) -> None:
    """Download the workflow's classification export from Zooniverse with panoptes-client's export API,
    resuming a dropped download, and publish it only once it is whole (header, every record complete).

    Credentials as select-next-batch takes them: PANOPTES_USERNAME and PANOPTES_PASSWORD, or
    PANOPTES_CLIENT_ID and PANOPTES_CLIENT_SECRET. The files hold the bytes exactly as Zooniverse served them;
    with --incremental, classifications.csv keeps every record it had and gains the new ones.

    Example: clumptool fetch-export --workflow-id 5678 --generate --subjects --out exports/

    Exit 0: every file asked for is in --out, whole. Exit 2: an error (no export yet, still being generated,
    a download that never completed, a truncated file); --out keeps its previous files.
    """
    from clumptool.active_learning.exports import FetchOptions, fetch_exports

    options = FetchOptions(workflow_id=workflow_id, project_id=project_id, generate=generate,
                           wait_minutes=wait_minutes, subjects=with_subjects, workflows=with_workflows,
                           incremental=incremental, endpoint=endpoint)
    try:
        report = fetch_exports(out, options, progress=not quiet, log=None if quiet else click.echo)
    except KeyboardInterrupt:
        click.echo(f"\nInterrupted: {out} is as it was before this run; run the same command again (without "
                   "--generate if an export was already requested)", err=True)
        sys.exit(130)
    if not quiet:
        click.echo(report.format())


@main.command("retire", short_help="Retire on Zooniverse the galaxies whose consensus is finished.")
@click.argument("subjects_table", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--workflow-id", type=int, required=True, help="Workflow to retire the subjects in.")
@click.option("--endpoint", default=DEFAULT_ENDPOINT, show_default=True,
              help="Panoptes endpoint (https; credentials come from PANOPTES_* only).")
@click.option("--state", type=click.Path(file_okay=False, path_type=Path),
              help="Folder of the ledger that remembers what was retired [default: $CLUMPTOOL_STATE_DIR (else "
                   "~/.local/state/clumptool)/<endpoint host>/workflow-<id>/].")
@click.option("--dry-run", is_flag=True, help="Print what would be retired; send nothing, write nothing.")
@click.option("--max", "max_subjects", type=int, default=1000, show_default=True,
              help="Refuse (exit 2) when more subjects than this are to be retired in one run.")
@click.option("--partial", is_flag=True, help="With more than --max to retire: retire the first --max now.")
@click.option("--batch-size", type=int, default=50, show_default=True, help="Subjects per retirement request.")
@click.option("--stalled", is_flag=True,
              help="Also retire the stalled galaxies (is_stalled: more volunteers are not expected to settle them) "
                   "with reason 'other'; look at them yourself (their finished_reason says what is contested).")
@click.option("--quiet", is_flag=True, help="No progress bar or summary (errors and warnings are always printed).")
def retire_command(subjects_table: Path, workflow_id: int, endpoint: str, state: Path | None, dry_run: bool,
                   max_subjects: int, partial: bool, batch_size: int, stalled: bool, quiet: bool) -> None:
    """Retire (reason 'consensus') the subjects of aggregate's SUBJECTS_TABLE whose is_finished is true.

    Only finished subjects are ever sent, and with --stalled the stalled ones (reason 'other'). A ledger
    makes reruns retire nothing twice and lets a run stopped half way resume; --max caps how many one run
    may retire (both kinds together). Subjects the server does not have in the workflow are reported and
    not retired.

    Example: clumptool retire aggregated/subjects.parquet --workflow-id 5678 --stalled --dry-run

    Exit 0: every finished (with --stalled, also stalled) subject is retired (or, with --dry-run, listed).
    Exit 2: an error (a table without is_finished, more than --max to retire, a failed request: run again
    to resume).
    """
    from clumptool.active_learning.retire import RetireOptions, retire_finished

    options = RetireOptions(workflow_id=workflow_id, endpoint=endpoint, state=state, dry_run=dry_run,
                            max_subjects=max_subjects, partial=partial, batch_size=batch_size, stalled=stalled)
    try:
        report = retire_finished(subjects_table, options, progress=not quiet)
    except KeyboardInterrupt:
        click.echo("\nInterrupted: run the same command again to resume (subjects already retired are not sent "
                   "again)", err=True)
        sys.exit(130)
    if not quiet or dry_run:
        click.echo(report.format())
    else:
        for line in report.warnings():
            click.echo(line, err=True)


def run() -> None:
    """Console entry point (``clumptool``)."""
    main.main(prog_name="clumptool")


if __name__ == "__main__":  # pragma: no cover
    run()

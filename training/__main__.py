"""``python -m training``: train, evaluate, export and publish EMNIST models.

A run folder (``--run``) carries a model from one step to the next; ``run`` chains them all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.architectures import ARCHITECTURES, DEFAULT_ARCHITECTURE

DEFAULT_DATA = "../shared/emnist"

EXAMPLES = """\
examples:
  python -m training run --data ../shared/emnist --run runs/bn_cnn --publish models
  python -m training train --arch seed --run runs/seed        # the reference recipe
  python -m training evaluate --run runs/seed                 # card.md + plots in the run folder
  python -m training export --run runs/seed                   # model.tflite (+ parity check)
  python -m training publish --run runs/seed --to s3://my-bucket/models
"""


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, required=True, help="run folder: checkpoints, history, card, exports")
    parser.add_argument(
        "--data", default=DEFAULT_DATA, help="EMNIST folder or s3://bucket/prefix (default: %(default)s)"
    )


def _add_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--arch",
        choices=sorted(ARCHITECTURES),
        default=DEFAULT_ARCHITECTURE,
        help="architecture (default: %(default)s)",
    )
    parser.add_argument("--epochs", type=int, help="override the architecture's recipe")
    parser.add_argument("--seed", type=int, default=1234, help="random seed for split, init and shuffling")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="stratified validation share")
    parser.add_argument("--limit", type=int, help="use only the first N images (smoke runs)")
    parser.add_argument("--init-from", type=Path, help="fine-tune: start from this run folder's best weights")
    parser.add_argument("--learning-rate", type=float, help="override the recipe's peak learning rate")
    parser.add_argument("--no-augment", action="store_true", help="train without random affine distortions")
    parser.add_argument("--label-smoothing", type=float, help="override the recipe's label smoothing")
    parser.add_argument(
        "--rendered-copies",
        type=int,
        help="per training image, copies rendered as uploads and read back by handler.imaging (cached in the run)",
    )


def _add_publish(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--to" if required else "--publish",
        dest="to",
        required=required,
        help="models root: a folder (e.g. models) or s3://bucket/models; a version is never overwritten",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one architecture (resumes an interrupted run)")
    _add_common(train)
    _add_train(train)
    evaluate = sub.add_parser(
        "evaluate", help="score the best checkpoint on the validation split; write card.md + plots"
    )
    _add_common(evaluate)
    export = sub.add_parser("export", help="write model.tflite and model.keras; fail if LiteRT disagrees with Keras")
    _add_common(export)
    ensemble = sub.add_parser(
        "ensemble", help="average several trained members (run folders or published versions) into one run"
    )
    ensemble.add_argument("--run", type=Path, required=True, help="run folder for the ensemble")
    ensemble.add_argument("--members", type=Path, nargs="+", required=True)
    publish = sub.add_parser("publish", help="upload an exported run as a write-once model version")
    publish.add_argument("--run", type=Path, required=True)
    _add_publish(publish, required=True)
    calibrate = sub.add_parser(
        "calibrate", help="fit a temperature and review threshold on held-out data; publish the calibrated version"
    )
    calibrate.add_argument("--model", type=Path, required=True, help="a published version folder")
    calibrate.add_argument("--data", default=DEFAULT_DATA)
    calibrate.add_argument("--to", type=Path, default=Path("models"), help="models root for the new version")
    calibrate.add_argument("--images", type=int, default=4000, help="per half and kind (clean, photo-like, pen photo)")
    reader = sub.add_parser(
        "line-reader",
        help="train the CTC line reader for touching characters; publish it with a version (--to)",
    )
    reader.add_argument("--model", type=Path, required=True, help="the published version to add it to")
    reader.add_argument("--run", type=Path, default=Path("runs/line_reader"))
    reader.add_argument("--data", default=DEFAULT_DATA)
    reader.add_argument("--samples", type=int, default=32000, help="training lines")
    reader.add_argument("--epochs", type=int, default=10)
    reader.add_argument("--to", type=Path, help="models root for the new version (default: do not publish)")
    reader.add_argument(
        "--reader-from",
        type=Path,
        help="a published version whose line reader to reuse (it does not depend on the glyph model) instead of training",
    )
    run = sub.add_parser("run", help="train, evaluate, export and (with --publish) publish in one go")
    _add_common(run)
    _add_train(run)
    _add_publish(run, required=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "calibrate":  # no TensorFlow needed: the published LiteRT model and the service's code
        import json

        from training.calibrate import measure, publish_calibrated, summarise

        measured = measure(args.model, args.data, args.images)
        report = summarise(measured)
        print(json.dumps(report, indent=2))
        print(f"published {publish_calibrated(args.model, args.to, report, measured)}")
        return 0
    if args.command == "line-reader":
        import json

        from handler.model import LINE_READER_FILE, MANIFEST_NAME, Manifest
        from training import line_reader

        classes = Manifest.from_json((args.model / MANIFEST_NAME).read_bytes()).classes
        if args.reader_from:  # measured again, on the same held-out lines
            samples = line_reader.reuse(args.reader_from, args.run)
            held_out = line_reader.held_out_lines(args.data)
            measured = {
                **line_reader.measure(args.run / LINE_READER_FILE, held_out, classes),
                "reused_from": args.reader_from.name,
            }
        else:
            samples = args.samples
            if not (args.run / "model.keras").exists():  # resumable: a trained reader is kept
                line_reader.train(args.run, args.data, args.samples, args.epochs)
            measured = line_reader.export_best(args.run, args.data, classes)
        report = {**measured, "train_lines": samples}
        (args.run / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
        if args.to:
            print(f"published {line_reader.publish(args.model, args.run, args.to, report)}")
        return 0
    from training import pipeline  # heavy imports (TensorFlow) only after --help

    return pipeline.dispatch(args)


if __name__ == "__main__":
    sys.exit(main())

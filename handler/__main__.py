"""``python -m handler``: label a folder, or run a bulk job over a bucket prefix.

The runtime package imports nothing outside itself; the demo (an embedded S3) is ``python -m infra.demo``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from handler.imaging.errors import ImageError
    from handler.readings import Reading
    from handler.records import Record, Source

BATCH = 64


def iter_files(folder: Path) -> Iterator[Path]:
    """A file itself, or every file under a folder (hidden ones left out), in order."""
    if folder.is_file():
        yield folder
        return
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts):
            yield path


def display_name(path: Path) -> str:
    """A file name as valid Unicode: bytes that are not UTF-8 (``caf\\xe9.png`` on Linux) are shown
    as ``\\xe9`` escapes rather than breaking the JSON line or the terminal."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def write_line(record: Record) -> None:
    """One JSON line, always UTF-8, whatever the locale says stdout is."""
    sys.stdout.buffer.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
    sys.stdout.buffer.flush()


def write_text(source: Source, read: Reading | ImageError) -> None:
    """``<file>\t<text>`` (lines of a page joined by `` / ``), or ``<file>\t!<code>: <message>``."""
    from handler.imaging.errors import ImageError

    if isinstance(read, ImageError):
        shown = f"!{read.code}: {read}"
    else:
        shown = read.text.replace("\n", " / ") + ("\t(review)" if read.review else "")
    sys.stdout.buffer.write(f"{source.key}\t{shown}\n".encode())
    sys.stdout.buffer.flush()


def read_file(path: Path, max_bytes: int) -> tuple[Source, bytes | ImageError]:
    """A local file as an input: its bytes, or the error its record will carry when it is over the limit."""
    from handler.imaging.errors import ErrorCode, ImageError
    from handler.records import Source, local_source

    name = display_name(path)
    size = path.stat().st_size
    if size > max_bytes:
        message = f"file is {size:,} bytes; the limit is {max_bytes:,} (MAX_OBJECT_BYTES)"
        return Source(None, name, None, size), ImageError(ErrorCode.TOO_LARGE, message)
    data = path.read_bytes()
    return local_source(name, data), data


def cmd_label(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from handler import model
    from handler.config import Settings
    from handler.recognition import AllowError, allowed_mask, label, model_info
    from handler.records import record_of
    from handler.storage import Storage
    from handler.workers import Workers, scorer

    missing = [path for path in args.paths if not path.exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    classifier = model.load(settings.resolved_model_uri, settings.model_cache_dir, fetch=Storage().download)
    allow = args.allow or settings.allow
    if allow:
        try:
            allowed_mask(classifier.classes, allow)
        except AllowError as exc:
            print(f"error: --allow: {exc}", file=sys.stderr)
            return 2
    workers = Workers(settings.cpu_workers - 1, scorer(classifier))
    info = model_info(classifier)
    files = [file for path in args.paths for file in iter_files(path)]
    bar = tqdm(total=len(files), unit=" images", desc="label", disable=None, dynamic_ncols=True)  # stderr, TTY only
    for start in range(0, len(files), BATCH):
        items = [read_file(path, settings.max_object_bytes) for path in files[start : start + BATCH]]
        readings = label(items, classifier, settings.max_pixels, settings.top_k, workers=workers, allow=allow)
        for (source, _), read in zip(items, readings, strict=True):
            assert read is not None  # no deadline: every input is read
            if args.text:
                write_text(source, read)
            else:
                write_line(record_of(source, read, info))
        bar.update(len(items))
    bar.close()
    workers.close()
    return 0


def cmd_bulk(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tqdm import tqdm

    from handler.bulk import run_prefix
    from handler.config import Settings
    from handler.pipeline import Service

    settings = Settings.from_env()
    if args.output:
        settings = replace(settings, bulk_output=args.output)
    prefix = args.prefix or settings.input_prefix
    if not prefix.startswith(settings.input_prefix):
        print(f"error: --prefix {prefix!r} must lie under the input prefix {settings.input_prefix!r}", file=sys.stderr)
        return 2
    bucket = args.bucket or settings.bucket
    if not bucket:
        print("error: give --bucket or set BUCKET", file=sys.stderr)
        return 2
    run_id = args.run_id or datetime.now(UTC).strftime("bulk-%Y%m%dT%H%M%SZ")
    service = Service.create(settings)
    with tqdm(unit=" inputs", desc="bulk", disable=None, dynamic_ncols=True) as bar:  # quiet when not a terminal

        def progress(seen: int, counts: dict[str, int]) -> None:
            bar.update(seen - bar.n)
            bar.set_postfix({k: v for k, v in counts.items() if v}, refresh=False)

        body = run_prefix(service, bucket, run_id, batch_size=args.batch_size, prefix=prefix, progress=progress)
    print(json.dumps({k: body[k] for k in ("run_id", "counts", "total", "error_codes")}))
    print(f"summary: s3://{bucket}/{settings.runs_prefix}{run_id}/summary.json", file=sys.stderr)
    return 0 if body["counts"]["failed"] == 0 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m handler", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    label = sub.add_parser(
        "label",
        help="print one JSON record per image file given or under a folder given (recursive); --text for the text",
    )
    label.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="image files and folders")
    label.add_argument(
        "--allow",
        metavar="CHARS",
        help="answer only with these characters, taken literally (e.g. 0123456789 for a digit field); "
        "probabilities are renormalised over them and the record says so",
    )
    label.add_argument(
        "--text", action="store_true", help="print <file> TAB <text> per image instead of the JSON records"
    )
    label.set_defaults(run=cmd_label)
    bulk = sub.add_parser("bulk", help="label every image under the input prefix of a bucket, resumably")
    bulk.add_argument("--bucket", help="bucket (default: $BUCKET)")
    bulk.add_argument(
        "--prefix", help="only inputs under this part of the input prefix, e.g. input/2024/ (default: all of it)"
    )
    bulk.add_argument("--run-id", help="summary goes to runs/<run-id>/summary.json (default: a timestamp)")
    bulk.add_argument("--batch-size", type=int, default=BATCH)
    bulk.add_argument(
        "--output",
        choices=["objects", "jsonl"],
        help="one record object per input (default, $BULK_OUTPUT), or one JSON Lines object per batch: "
        "output/_batches/<model>/<batch>.jsonl, about 60x fewer PUTs",
    )
    bulk.set_defaults(run=cmd_bulk)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())

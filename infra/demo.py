"""``python -m infra.demo`` (``make demo``): the whole upload path on this machine, no AWS account.

An embedded S3 on 127.0.0.1, the bundled model, the images in ``samples/`` plus one broken
upload: each upload's S3 notification reaches the Lambda entry point through an SQS batch,
exactly as deployed, and the records written to ``output/`` (results and errors) are printed.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from infra.local_s3 import LocalContext, embedded_s3, s3_notification, sqs_wrap

BUCKET = "handwriting-demo"
QUIET_POWERTOOLS = {
    "POWERTOOLS_SERVICE_NAME": "handwriting-ocr-demo",
    "POWERTOOLS_METRICS_NAMESPACE": "HandwritingOCR",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
}


def run_demo(samples: Path, out: object = sys.stdout) -> int:
    files = sorted(
        p for p in samples.rglob("*") if p.is_file() and p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"}
    )
    if not files:
        print(f"error: no sample images in {samples}", file=sys.stderr)
        return 2
    with embedded_s3() as endpoint:
        os.environ.update({**QUIET_POWERTOOLS, "BUCKET": BUCKET})
        import boto3

        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        uploads = [(f"input/demo/{p.relative_to(samples).as_posix()}", p.read_bytes()) for p in files]
        uploads.append(("input/demo/broken upload.png", b"\x89PNG\r\n\x1a\n this is not really a png"))
        notifications = []
        for key, body in uploads:
            etag = s3.put_object(Bucket=BUCKET, Key=key, Body=body)["ETag"].strip('"')
            notifications.append(s3_notification(BUCKET, [(key, etag, len(body))]))
        print(f"embedded S3 at {endpoint}: uploaded {len(uploads)} objects to s3://{BUCKET}/input/demo/", file=out)

        app = importlib.import_module("handler.app")
        response = app.on_upload(sqs_wrap(notifications), LocalContext())
        print(f"on_upload: {len(notifications)} SQS messages, {len(response['batchItemFailures'])} failed", file=out)
        print(f"model: {app.service().model_info.version}\n", file=out)

        print(
            f"{'input (true character after the dash)':<38} {'label':>5} {'conf':>6}  {'alternatives / error':<40}",
            file=out,
        )
        print("-" * 92, file=out)
        for key, _ in uploads:
            rel = key.removeprefix("input/")
            record = app.service().storage.get_json(BUCKET, f"output/{rel}.json")  # its result or its error
            if "error" in record:
                print(
                    f"{rel:<38} {'-':>5} {'':>6}  {record['error']['code']}: {record['error']['message'][:50]}",
                    file=out,
                )
            elif "label" in record:
                alternatives = ", ".join(f"{t['label']} {t['confidence']:.2f}" for t in record["top"][1:3])
                expected = Path(rel).stem.rpartition("-")[2]
                mark = "" if not expected else (" ok" if expected == record["label"] else " x")
                review = "  review" if record.get("review") else ""
                print(
                    f"{rel:<38} {record['label']:>5} {record['confidence']:>6.3f}  {alternatives}{mark:>8}{review}",
                    file=out,
                )
            else:  # several characters: the text, each character's confidence, and the true text (file name)
                text = record["text"].replace("\n", " / ")
                confidences = " ".join(f"{c['confidence']:.2f}" for c in record["characters"])
                expected = Path(rel).stem.replace("_", " / ")
                mark = " ok" if expected == text else " x"
                review = "  review" if record.get("review") else ""
                print(f"{rel:<38} {text:>12}  {confidences}{mark:>6}{review}", file=out)
        print(f"\nrecords: s3://{BUCKET}/output/demo/*.json (errors mirrored to s3://{BUCKET}/errors/demo/)", file=out)
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m infra.demo", description=__doc__)
    parser.add_argument("--samples", type=Path, default=Path(__file__).resolve().parent.parent / "samples")
    return run_demo(samples=parser.parse_args(argv).samples)


if __name__ == "__main__":
    sys.exit(main())

"""Regenerate the figure tables of README.md, docs/BENCHMARKS.md and docs/MODEL.md from
benchmarks/results/*.json (written by the benchmarks) and the bundled model's calibration.json.

Run after the benchmarks (``make bench`` does): the tables between the ``<!-- bench:... -->`` markers
are replaced wherever they are; nothing else changes. Figures are never typed by hand.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.common import RESULTS  # noqa: E402
from benchmarks.touching import WAYS as TOUCHING_WAYS  # noqa: E402
from training.calibrate import calibration_table  # noqa: E402  - the model card's table, shown in the README too


def speed_table() -> str:
    speed = json.loads((RESULTS / "speed.json").read_text())
    cold = json.loads((RESULTS / "cold_start.json").read_text())
    floor = speed["floor_ms"]
    rows = [
        ("JPEG decode", f"{speed['decode_ms']:.3f} ms", "", ""),
        ("normaliser", f"{speed['normalise_ms']:.3f} ms", "<= 1.2 ms", ""),
    ]
    if "normalise_form_cell_ms" in speed:
        rows.append(("normaliser, letters in printed form boxes", f"{speed['normalise_form_cell_ms']:.3f} ms", "", ""))
    rows += [
        ("LiteRT inference, batch 64", f"{speed['inference_ms']:.3f} ms", "", ""),
        ("**floor: decode + inference**", f"{floor:.3f} ms", "", "1.00x"),
        (
            "`recognition.label`, batch 64, 1 process",
            f"{speed['label_1_ms']:.3f} ms",
            "",
            f"{speed['label_1_ms'] / floor:.2f}x",
        ),
        (
            "`recognition.label`, batch 64, 2 processes",
            f"{speed['label_2_ms']:.3f} ms",
            "",
            f"{speed['label_2_ms'] / floor:.2f}x",
        ),
        ("throughput, 2 processes / 1", f"{speed['two_worker_speedup']:.2f}x", ">= 1.7x", ""),
    ]
    if "host_two_process_ceiling" in speed:
        ceiling = speed["host_two_process_ceiling"]
        rows.append(("host ceiling: the normaliser alone in 2 independent processes / 1", f"{ceiling:.2f}x", "", ""))
    if (RESULTS / "throughput.json").exists():
        rates = json.loads((RESULTS / "throughput.json").read_text())
        batch_64, batch_1, naive = (rates[f"images_per_s_{k}"] for k in ("batch_64", "batch_1", "naive"))
        rows.append(
            (
                "warm throughput, bytes -> label, one process, batch 64 / batch 1 "
                "(vs naive TensorFlow `predict` per image)",
                f"{batch_64:.0f} / {batch_1:.0f} images/s: {batch_64 / naive:.1f}x / {batch_1 / naive:.1f}x naive",
                ">= 10x",
                "",
            )
        )
    rows += [
        ("cold start: import + load and verify the model", f"{cold['init_s']:.3f} s", "<= 0.4 s", ""),
        (
            "cold start: until the S3 clients (built in the background) are ready",
            f"{cold['client_ready_s']:.3f} s",
            "",
            "",
        ),
    ]
    lines = [
        f"Per image, {speed['images']} photo-like JPEG uploads, least of interleaved rounds, {speed['cpus']} CPUs "
        + (f"(reference loop {speed['reference_ms']} ms) " if "reference_ms" in speed else "")
        + "(`benchmarks/speed.py`, `benchmarks/cold_start.py`):",
        "",
        "| step | per image | target | vs floor |",
        "| --- | --- | --- | --- |",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
    ]
    return "\n".join(lines)


def cost_table() -> str:
    cost = json.loads((RESULTS / "cost.json").read_text())
    names = {
        "upload": "upload path (S3 -> SQS -> Lambda)",
        "bulk_objects": "bulk, one object per input",
        "bulk_jsonl": "bulk, JSON Lines per batch",
    }
    targets = {"upload": "compute <= 5% of the total", "bulk_jsonl": "<= $1.5"}
    lines = [
        f"Per million images, {cost['prices_as_of']}, {cost['memory_mb']} MB (`benchmarks/s3_path.py` measures "
        f"CPU and requests per image, `benchmarks/cost.py` prices them; this machine's reference loop: "
        f"{cost['reference_ms']} ms):",
        "",
        "| path | CPU per image (measured) | total, x86_64 | total, arm64 | target | biggest items (x86_64) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, items in cost["items"].items():
        top = sorted(items.items(), key=lambda kv: -kv[1])[:3]
        lines.append(
            f"| {names[name]} | {cost['cpu_ms_per_image'][name]:.1f} ms | ${cost['totals'][name]:.2f} | "
            f"${cost['totals_arm64'][name]:.2f} | {targets.get(name, '')} | "
            + ", ".join(f"{item} ${value:.2f}" for item, value in top)
            + " |"
        )
    upload = cost["items"]["upload"]["Lambda GB-seconds"]
    lines += [
        "",
        f"The upload path before any compute: ${cost['upload_before_compute']:.2f}; its compute (Lambda GB-seconds): "
        f"${upload:.3f}, **{cost['upload_compute_share']:.1%}** of its cost (target <= 5%).",
    ]
    return "\n".join(lines)


def s3_client_table() -> str:
    result = json.loads((RESULTS / "s3_client.json").read_text())
    figures = result["cpu_ms_per_pair"]
    base = next(iter(figures.values()))
    lines = [
        f"CPU per input GET + record PUT through boto3, {result['requests']} requests x {result['rounds']} rounds "
        f"interleaved, against moto's S3 (`benchmarks/s3_client.py`; reference loop {result['reference_ms']} ms):",
        "",
        "| client | CPU per GET + PUT | vs defaults |",
        "| --- | --- | --- |",
        *[f"| {name} | {ms:.2f} ms | {ms / base - 1:+.1%} |" for name, ms in figures.items()],
    ]
    return "\n".join(lines)


def headline_table() -> str:
    """The README's short table: one figure per concern, each linking to where it is explained."""
    recognition = json.loads((RESULTS / "recognition.json").read_text())
    strings = json.loads((RESULTS / "strings.json").read_text())
    speed = json.loads((RESULTS / "speed.json").read_text())
    cold = json.loads((RESULTS / "cold_start.json").read_text())
    cost = json.loads((RESULTS / "cost.json").read_text())
    kinds = recognition["kinds"]
    rows = [
        (
            "accuracy through `python -m handler label`, held-out EMNIST glyphs: 28x28 PNG / photo-like JPEG / pen photo",
            " / ".join(f"{kinds[k]['accuracy']:.1%}" for k in ("28x28 EMNIST PNG", "photo-like JPEG"))
            + f" / {kinds['pen photo JPEG (3-12 px pen)']['accuracy']:.1%}",
            "[recognition](docs/BENCHMARKS.md#recognition-end-to-end)",
        ),
        (
            "labels not flagged for review that are right (photo-like JPEG)",
            f"{kinds['photo-like JPEG']['accepted_accuracy']:.2%} of {kinds['photo-like JPEG']['coverage']:.0%}",
            "[calibration](docs/MODEL.md#calibrated-confidence-and-the-review-flag)",
        ),
        (
            "character error rate, pages of 1-12 hand-printed characters",
            f"{strings['overall']['cer']:.1%}",
            "[strings](docs/BENCHMARKS.md#strings-of-characters)",
        ),
        (
            "CPU per photo-like upload, read (batch 64, one process)",
            f"{speed['label_1_ms']:.1f} ms",
            "[speed](docs/BENCHMARKS.md#speed)",
        ),
        (
            "cold start: import + load and verify the model",
            f"{cold['init_s']:.2f} s",
            "[speed](docs/BENCHMARKS.md#speed)",
        ),
        (
            "cost per million uploads (x86_64, 1024 MB): total / compute's share",
            f"${cost['totals']['upload']:.2f} / {cost['upload_compute_share']:.1%}",
            "[cost](docs/BENCHMARKS.md#cost)",
        ),
        (
            "cost per million images, bulk run writing JSON Lines",
            f"${cost['totals']['bulk_jsonl']:.2f}",
            "[cost](docs/BENCHMARKS.md#cost)",
        ),
    ]
    return "\n".join(
        ["| what | figure | details |", "| --- | --- | --- |", *[f"| {a} | {b} | {c} |" for a, b, c in rows]]
    )


def digits_table() -> str:
    digits = json.loads((RESULTS / "allow_digits.json").read_text())
    lines = [
        f"{digits['images']} held-out EMNIST digits (the model's validation split) written as files and read by "
        "`python -m handler label`, beside the model's own accuracy on the arrays (`benchmarks/allow_digits.py`):",
        "",
        "| input | any class | `--allow 0123456789` |",
        "| --- | --- | --- |",
    ]
    for name, figures in digits.items():
        if name != "images":
            lines.append(f"| {name} | {figures['any']:.2%} | {figures['allow_digits']:.2%} |")
    return "\n".join(lines)


def recognition_table() -> str:
    result = json.loads((RESULTS / "recognition.json").read_text())
    own = result["model_on_arrays"]
    lines = [
        f"{result['images']:,} held-out glyphs per kind (the model's validation split), saved as the files users upload "
        f"and read by `python -m handler label`, model `{result['model']}` (`benchmarks/recognition.py`):",
        "",
        "| input | accuracy | class-balanced | gap to the arrays | ECE | review: false (coverage, accuracy) |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| model on the 28x28 arrays | {own['accuracy']:.2%} | {own['balanced_accuracy']:.2%} |  |  |  |",
    ]
    for name, k in result["kinds"].items():
        gap = (own["accuracy"] - k["accuracy"]) * 100
        lines.append(
            f"| {name} | {k['accuracy']:.2%} | {k['balanced_accuracy']:.2%} | {gap:.2f} pts | {k['ece']:.2%} "
            f"| {k['coverage']:.1%}, {k['accepted_accuracy']:.2%} |"
        )
    if "model_on_pen_arrays" in result:
        lines.append(
            f"| model on the same glyphs redrawn with a 2.5 px pen, as 28x28 arrays | "
            f"{result['model_on_pen_arrays']:.2%} |  |  |  |  |"
        )
    digits = result["digits_16x16"]
    lines.append(
        f"| 16x16 digit scans ({digits['images']}), any class / `--allow 0123456789` | "
        f"{digits['any']['accuracy']:.2%} / {digits['allow_digits']['accuracy']:.2%} |  |  |  |  |"
    )
    lines += [
        "",
        "Targets: 28x28 PNGs within 0.3 points of the arrays, photo-like within 1.5, ECE <= 1.5%, class-balanced "
        ">= 90.5% through the service.",
    ]
    return "\n".join(lines)


def models_table() -> str:
    """The bundled model beside the previous one, both read through the service on the same held-out files."""
    new = json.loads((RESULTS / "recognition.json").read_text())
    old = json.loads((RESULTS / "recognition-previous.json").read_text())
    lines = [
        f"Class-balanced accuracy on {new['images']:,} held-out glyphs per kind (the same files for both), read by "
        "`python -m handler label` (`benchmarks/recognition.py`, `--model` for the previous version):",
        "",
        f"| input | previous `{old['model']}` | bundled `{new['model']}` |",
        "| --- | --- | --- |",
        f"| model on the 28x28 arrays | {old['model_on_arrays']['balanced_accuracy']:.2%} "
        f"| {new['model_on_arrays']['balanced_accuracy']:.2%} |",
    ]
    for name in (name for name in new["kinds"] if name in old["kinds"]):
        lines.append(
            f"| {name} | {old['kinds'][name]['balanced_accuracy']:.2%} | {new['kinds'][name]['balanced_accuracy']:.2%} |"
        )
    for key, label in (("any", "any class"), ("allow_digits", "`--allow 0123456789`")):
        lines.append(
            f"| 16x16 digit scans, {label} (accuracy) | {old['digits_16x16'][key]['accuracy']:.2%} "
            f"| {new['digits_16x16'][key]['accuracy']:.2%} |"
        )
    return "\n".join(lines)


def strings_table() -> str:
    result = json.loads((RESULTS / "strings.json").read_text())
    lines = [
        f"{result['overall']['strings']} pages of 1-12 held-out EMNIST glyphs in 1-3 lines (random gaps, touching "
        "and overlapping pairs, baseline jitter, size variation), photographed on paper, read by "
        "`python -m handler label` (`benchmarks/strings.py`):",
        "",
        "| strings | count | character error rate | insertions + deletions | exact | character count right |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("overall", "not_touching", "touching"):
        r = result[name]
        lines.append(
            f"| {name.replace('_', ' ')} | {r['strings']} | {r['cer']:.2%} | {r['insertions_deletions']:.2%} "
            f"| {r['exact']:.2%} | {r['count_right']:.2%} |"
        )
    for name, title in (
        ("amounts_allow_digits", "amounts with `,` `.` `-` separators, `--allow 0123456789`"),
        ("names_in_form_fields", "names in capitals, one letter per box of a form field"),
    ):
        r = result[name]
        lines.append(
            f"| {title} | {r['strings']} | {r['cer']:.2%} | {r['insertions_deletions']:.2%} "
            f"| {r['exact']:.2%} | {r['count_right']:.2%} |"
        )
    lines += [
        "",
        f"Single-character error on the same glyphs (each a photo-like upload): {result['single_character_error']:.2%}; "
        f"character error rate / that = **{result['cer_over_single_error']:.2f}** (target <= 1.3, aim 1.1). "
        f"Time per character {result['ms_per_character']:.2f} ms vs {result['ms_per_single_character_image']:.2f} ms "
        f"per single-character image: {result['time_ratio']:.2f}x (target <= 1.5x). Targets: insertions + deletions "
        "< 1%, count right >= 98% of strings whose characters do not touch.",
    ]
    return "\n".join(lines)


def touching_table() -> str:
    result = json.loads((RESULTS / "touching.json").read_text())
    lines = [
        f"{result['pages']} one-line photo-like pages of 2-4 held-out EMNIST glyphs, every neighbouring pair touching "
        "or slightly overlapping (`benchmarks/touching.py`):",
        "",
        "| touching one-line pages | character error rate | exact | character count right |",
        "| --- | --- | --- | --- |",
    ]
    for name, title in TOUCHING_WAYS.items():
        r = result[name]
        lines.append(f"| {title} | {r['cer']:.2%} | {r['exact']:.2%} | {r['count_right']:.2%} |")
    return "\n".join(lines)


def askew_table() -> str:
    result = json.loads((RESULTS / "askew.json").read_text())
    lines = [
        "Forms photographed askew (`benchmarks/askew.py`: held-out glyphs in form boxes, cropped the way a form "
        "processor cuts a box out of a tilted photo, and names in form fields whole on their paper):",
        "",
        "| tilt | letter in a form box: accuracy | name in a form field: character error rate |",
        "| --- | --- | --- |",
    ]
    for angle, r in result.items():
        names = f"{r['names_cer']:.2%}" if "names_cer" in r else ""
        lines.append(f"| {angle} | {r['form_cell_accuracy']:.2%} | {names} |")
    return "\n".join(lines)


def calibration_section() -> str:
    version = (ROOT / "models" / "DEFAULT").read_text().strip()
    report = json.loads((ROOT / "models" / version / "calibration.json").read_text())
    return "\n".join(
        [
            f"Bundled version `{version}`: "
            + (
                f"a temperature per predicted class ({min(report['class_temperatures']):.2f}-"
                f"{max(report['class_temperatures']):.2f}; one for all would be {report['temperature']:.2f})"
                if report.get("class_temperatures")
                else f"temperature {report['temperature']:.2f}"
            )
            + ", review below confidence "
            f"{report['review_below']:.3f} (chosen for >= {report['target_precision']:.0%} correct accepted labels; "
            "`python -m training calibrate`, fitted on one half of the validation split, reported on the other):",
            "",
            *calibration_table(report),
        ]
    )


SECTIONS = {
    "headline": headline_table,
    "speed": speed_table,
    "cost": cost_table,
    "s3client": s3_client_table,
    "digits": digits_table,
    "calibration": calibration_section,
    "recognition": recognition_table,
    "strings": strings_table,
    "touching": touching_table,
    "askew": askew_table,
    "models": models_table,
}
DOCUMENTS = ("README.md", "docs/BENCHMARKS.md", "docs/MODEL.md")


def replace(text: str, marker: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- bench:{marker} -->\n)(?:.*?\n)?(<!-- /bench:{marker} -->)", re.S)
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def main() -> int:
    texts = {name: (ROOT / name).read_text() for name in DOCUMENTS}
    for marker, table in SECTIONS.items():
        holders = [name for name, text in texts.items() if f"<!-- bench:{marker} -->" in text]
        if not holders:
            raise SystemExit(f"no document has a <!-- bench:{marker} --> section")
        body = table()
        for name in holders:
            texts[name] = replace(texts[name], marker, body)
    for name, text in texts.items():
        (ROOT / name).write_text(text)
    print(f"tables regenerated from benchmarks/results/ in {', '.join(DOCUMENTS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The steps behind ``python -m training``; each takes the parsed arguments and a run folder."""

from __future__ import annotations

import argparse

from training import data as emnist
from training.data import Emnist


def load_data(args: argparse.Namespace) -> Emnist:
    print(f"loading EMNIST from {args.data} ...", flush=True)
    dataset = emnist.load(args.data)
    print(f"  {len(dataset)} images, {len(dataset.classes)} classes from {', '.join(dataset.sources)}", flush=True)
    return dataset


def recipe_overrides(args: argparse.Namespace) -> dict[str, object]:
    overrides: dict[str, object] = {}
    if args.learning_rate is not None:
        overrides["learning_rate"] = args.learning_rate
    if args.no_augment:
        overrides["augment"] = False
    if args.label_smoothing is not None:
        overrides["label_smoothing"] = args.label_smoothing
    if args.rendered_copies is not None:
        overrides["rendered_copies"] = args.rendered_copies
    return overrides


def do_train(args: argparse.Namespace, dataset: Emnist) -> None:
    from training.train import train

    config = train(
        dataset,
        args.run,
        architecture=args.arch,
        epochs=args.epochs,
        seed=args.seed,
        val_fraction=args.val_fraction,
        data_label=args.data,
        limit=args.limit,
        init_from=args.init_from,
        recipe_overrides=recipe_overrides(args),
    )
    print(f"trained {config.architecture} ({config.parameters:,} parameters) -> {args.run / 'best.keras'}")


def do_evaluate(args: argparse.Namespace, dataset: Emnist) -> None:
    from training.evaluate import evaluate_run

    report = evaluate_run(args.run, dataset)
    print(
        f"validation accuracy {report.accuracy:.4f}, class-balanced {report.balanced_accuracy:.4f}"
        f" -> {args.run / 'card.md'}"
    )


def do_export(args: argparse.Namespace, dataset: Emnist) -> None:
    from training.export import export_run

    result = export_run(args.run, dataset)
    print(f"exported {result.tflite} ({result.variant}); LiteRT/Keras top-1 agreement {result.agreement:.5f}")


def do_publish(args: argparse.Namespace) -> None:
    from training.publish import publish_run

    uri = publish_run(args.run, args.to)
    print(f"published; deploy with MODEL_URI={uri}")


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "publish":
        do_publish(args)
        return 0
    if args.command == "ensemble":
        from training.ensemble import build_ensemble

        config = build_ensemble(args.members, args.run)
        print(f"{config.architecture}: {config.parameters:,} parameters -> {args.run / 'best.keras'}")
        return 0
    dataset = load_data(args)
    if args.command in ("train", "run"):
        do_train(args, dataset)
    if args.command in ("evaluate", "run"):
        do_evaluate(args, dataset)
    if args.command in ("export", "run"):
        do_export(args, dataset)
    if args.command == "run" and args.to:
        do_publish(args)
    return 0

"""Average the probabilities of several trained members into one model: one LiteRT file, one manifest, the
same contract as a single network. Members are run folders (their ``best.keras``) or published versions
(their ``model.keras``), trained on the same split so the ensemble's validation images stay held out.

The result is a run folder like any other (``config.json`` + ``best.keras``), so ``evaluate``, ``export``,
``publish`` and ``calibrate`` treat it as they treat one network.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

from training.train import RunConfig, git_commit

if TYPE_CHECKING:
    import keras


def _member_model(path: Path) -> keras.Model:
    import keras

    file = path / "best.keras" if (path / "best.keras").exists() else path / "model.keras"
    return keras.models.load_model(file, compile=False)


def _member_config(path: Path) -> dict:
    if (path / "config.json").exists():
        return json.loads((path / "config.json").read_text())
    manifest = json.loads((path / "manifest.json").read_text())
    return {"architecture": manifest["training"]["architecture"], "split": manifest["training"]["split"]}


def build_ensemble(members: list[Path], run_dir: Path) -> RunConfig:
    """Members -> ``run_dir`` holding the averaged model and a config naming them; the split must agree."""
    import keras

    if len(members) < 2:
        raise ValueError("an ensemble needs at least two members")
    configs = [_member_config(m) for m in members]
    splits = {json.dumps(c.get("split") or {"val_fraction": c["val_fraction"], "seed": c["seed"]}) for c in configs}
    if len(splits) != 1:
        raise ValueError(f"members were trained on different splits: {sorted(splits)}; their validation would leak")
    models = [_member_model(m) for m in members]
    inputs = keras.Input(models[0].input_shape[1:])
    for number, model in enumerate(models):
        model.name = f"member_{number}_{model.name}"
    averaged = keras.layers.Average()([model(inputs) for model in models])
    ensemble = keras.Model(inputs, averaged, name="ensemble")
    run_dir.mkdir(parents=True, exist_ok=True)
    ensemble.save(run_dir / "best.keras")
    base = next((p for p in members if (p / "config.json").exists()), None)
    if base is None:
        raise ValueError("at least one member must be a run folder (its config says what data it saw)")
    config = replace(
        RunConfig.read(base),
        architecture="ensemble(" + "+".join(c["architecture"] for c in configs) + ")",
        parameters=ensemble.count_params(),
        commit=git_commit(),
        init_from=None,
    )
    (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    (run_dir / "members.json").write_text(json.dumps([str(m) for m in members], indent=2) + "\n")
    return config

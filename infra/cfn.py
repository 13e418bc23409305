"""Read a CloudFormation/SAM template, keeping intrinsic tags (``!Ref``, ``!Sub``...) as plain dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class _TemplateLoader(yaml.SafeLoader):
    pass


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_TemplateLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_TemplateLoader)


def entry_points(template: dict[str, Any]) -> dict[str, str]:
    """Function logical id -> the ``module.function`` its image runs."""
    return {
        name: resource["Properties"]["ImageConfig"]["Command"][0]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }

"""The SAM template is wired as documented: entry points exist, IAM is least-privilege, queues and bulk jobs connect."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from infra.cfn import entry_points, load_template

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = load_template(ROOT / "template.yaml")
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
PREFIX_PARAMETERS = {"InputPrefix", "OutputPrefix", "ErrorPrefix", "ModelsPrefix", "RunsPrefix"}


def statements(resource: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for policy in resource["Properties"].get("Policies", []):
        found.extend(policy.get("Statement", []))
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize(("function", "target"), sorted(entry_points(TEMPLATE).items()))
def test_every_function_image_command_names_a_real_handler(function: str, target: str) -> None:
    module, _, name = target.rpartition(".")
    assert callable(getattr(importlib.import_module(module), name)), f"{function}: {target} is not callable"


def test_functions_are_container_images_built_from_the_dockerfile() -> None:
    for name in entry_points(TEMPLATE):
        resource = RESOURCES[name]
        assert resource["Properties"]["PackageType"] == "Image"
        assert resource["Metadata"]["Dockerfile"] == "Dockerfile" and resource["Metadata"]["DockerContext"] == "."


def test_iam_statements_name_only_this_bucket_and_configured_prefixes() -> None:
    for name, resource in RESOURCES.items():
        if resource["Type"] not in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine"):
            continue
        for statement in statements(resource):
            for target in as_list(statement["Resource"]):
                text = json.dumps(target)
                assert text != '"*"' and '"*"' not in text, f"{name}: wildcard resource"
                if any(action.startswith("s3:") for action in as_list(statement["Action"])):
                    if "Bucket.Arn}/" in text:
                        assert any(f"${{{p}}}*" in text for p in PREFIX_PARAMETERS), f"{name}: {text}"
                    else:
                        assert statement["Action"] == "s3:ListBucket" and "Condition" in statement, name


def test_upload_function_reads_inputs_and_writes_only_records() -> None:
    granted = {
        (action, json.dumps(target))
        for statement in statements(RESOURCES["OcrFunction"])
        for action in as_list(statement["Action"])
        for target in as_list(statement["Resource"])
    }
    writes = {target for action, target in granted if action in ("s3:PutObject", "s3:DeleteObject")}
    assert all("OutputPrefix" in t or "ErrorPrefix" in t for t in writes) and len(writes) == 2
    reads = {target for action, target in granted if action == "s3:GetObject"}
    assert any("InputPrefix" in t for t in reads) and not any("OutputPrefix" in t for t in reads)


def test_bucket_is_private_encrypted_tls_only_and_notifies_the_queue_for_inputs_only() -> None:
    bucket = RESOURCES["Bucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    (notification,) = bucket["NotificationConfiguration"]["QueueConfigurations"]
    assert notification["Queue"] == {"Fn::GetAtt": ["UploadsQueue", "Arn"]}
    assert notification["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": {"Ref": "InputPrefix"}}]
    (deny,) = RESOURCES["BucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_queue_feeds_the_function_in_batches_with_partial_failures_and_a_dead_letter_queue() -> None:
    queue = RESOURCES["UploadsQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["UploadsDeadLetterQueue", "Arn"]}
    assert 1 < queue["RedrivePolicy"]["maxReceiveCount"] <= 10
    event = RESOURCES["OcrFunction"]["Properties"]["Events"]["Uploads"]
    assert event["Type"] == "SQS" and event["Properties"]["Queue"] == {"Fn::GetAtt": ["UploadsQueue", "Arn"]}
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert "MaximumBatchingWindowInSeconds" in event["Properties"]
    alarm = RESOURCES["DeadLetterAlarm"]["Properties"]
    assert alarm["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["UploadsDeadLetterQueue", "QueueName"]}


def test_schedule_starts_a_distributed_map_over_the_input_prefix() -> None:
    machine = RESOURCES["BulkStateMachine"]["Properties"]
    (schedule,) = machine["Events"].values()
    assert schedule["Type"] == "ScheduleV2"
    assert schedule["Properties"]["State"] == {"Ref": "BulkScheduleState"}
    definition = json.loads((ROOT / machine["DefinitionUri"]).read_text())
    mapped = definition["States"][definition["StartAt"]]
    assert mapped["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert mapped["ItemReader"]["Resource"] == "arn:aws:states:::s3:listObjectsV2"
    assert mapped["ItemReader"]["Parameters"]["Prefix"] == "${InputPrefix}"
    assert "MaxItemsPerBatchPath" in mapped["ItemBatcher"] and "MaxConcurrencyPath" in mapped
    task = mapped["ItemProcessor"]["States"]["LabelBatch"]
    assert task["Parameters"]["FunctionName"] == "${BulkFunctionArn}"
    assert any("Lambda.TooManyRequestsException" in r["ErrorEquals"] and r["BackoffRate"] > 1 for r in task["Retry"])
    assert mapped["ResultWriter"]["Parameters"]["Prefix"].startswith("${RunsPrefix}")
    assert definition["States"][mapped["Next"]]["Parameters"]["FunctionName"] == "${SummarizeFunctionArn}"
    substitutions = machine["DefinitionSubstitutions"]
    assert substitutions["BulkFunctionArn"] == {"Fn::GetAtt": ["BulkFunction", "Arn"]}
    payload = json.loads(
        schedule["Properties"]["Input"]["Fn::Sub"]
        .replace("${BulkBatchSize}", "64")
        .replace("${BulkMaxConcurrency}", "5")
    )
    assert payload == {"batch_size": 64, "max_concurrency": 5}


def test_model_uri_is_pinned_by_a_parameter_defaulting_to_the_bundled_model() -> None:
    assert TEMPLATE["Parameters"]["ModelUri"]["Default"] == ""
    assert TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]["MODEL_URI"] == {"Ref": "ModelUri"}


def test_outputs_give_what_a_user_needs() -> None:
    assert {"BucketName", "UploadsQueueUrl", "OcrFunctionName", "BulkStateMachineArn"} <= set(TEMPLATE["Outputs"])

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


LOG_DELIVERY = {  # CloudWatch Logs delivery for Step Functions takes no resource ARN (AWS documents "*")
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
}


def test_iam_statements_name_only_this_bucket_and_configured_prefixes() -> None:
    for name, resource in RESOURCES.items():
        if resource["Type"] not in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine"):
            continue
        for statement in statements(resource):
            if set(as_list(statement["Action"])) <= LOG_DELIVERY:
                continue
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
    assert any("InputPrefix" in t for t in reads) and any("ModelsPrefix" in t for t in reads)
    assert reads - writes == {t for t in reads if "InputPrefix" in t or "ModelsPrefix" in t}  # nothing else readable


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
    mapping = RESOURCES["UploadsEventSource"]["Properties"]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["UploadsQueue", "Arn"]}
    assert mapping["FunctionName"] == {"Ref": "OcrFunction"}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert "MaximumBatchingWindowInSeconds" in mapping
    alarm = RESOURCES["DeadLetterAlarm"]["Properties"]
    assert alarm["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["UploadsDeadLetterQueue", "QueueName"]}


def test_schedule_starts_a_distributed_map_over_the_input_prefix() -> None:
    machine = RESOURCES["BulkStateMachine"]["Properties"]
    (schedule,) = machine["Events"].values()
    assert schedule["Type"] == "ScheduleV2"
    assert schedule["Properties"]["State"] == {"Ref": "BulkScheduleState"}
    definition = json.loads((ROOT / machine["DefinitionUri"]).read_text())
    mapped = definition["States"]["LabelAll"]
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


# --- what a real account meets: names per stack, quotas, derived limits, Express budgets, alarms ---

PARAMETERS: dict[str, Any] = TEMPLATE["Parameters"]
DEFINITION = json.loads((ROOT / RESOURCES["BulkStateMachine"]["Properties"]["DefinitionUri"]).read_text())
EXPRESS_LIMIT_SECONDS = 300


def evaluate_rule(condition: Any, values: dict[str, str]) -> Any:
    """The few rule functions the template uses, evaluated as CloudFormation does (parameters are strings)."""
    if isinstance(condition, dict):
        (name, argument), *_ = condition.items()
        if name == "Ref":
            return values[argument]
        if name == "Fn::Or":
            return any(evaluate_rule(item, values) for item in argument)
        if name == "Fn::Not":
            return not evaluate_rule(argument[0], values)
        if name == "Fn::Equals":
            return str(evaluate_rule(argument[0], values)) == str(evaluate_rule(argument[1], values))
        if name == "Fn::Contains":
            return str(evaluate_rule(argument[1], values)) in [str(v) for v in argument[0]]
        raise AssertionError(f"rule function {name} not understood")
    return condition


def rules_pass(**given: int) -> bool:
    values = {name: str(spec.get("Default", "")) for name, spec in PARAMETERS.items()}
    values.update({name: str(value) for name, value in given.items()})
    return all(
        evaluate_rule(assertion["Assert"], values)
        for rule in TEMPLATE["Rules"].values()
        for assertion in rule["Assertions"]
    )


def test_schedule_is_named_from_the_stack_so_two_stacks_can_share_an_account() -> None:
    (schedule,) = RESOURCES["BulkStateMachine"]["Properties"]["Events"].values()
    assert "${AWS::StackName}" in schedule["Properties"]["Name"]["Fn::Sub"]


def test_reserved_concurrency_is_optional_and_off_by_default() -> None:
    assert PARAMETERS["ReservedConcurrency"]["Default"] == 0 and PARAMETERS["BulkReservedConcurrency"]["Default"] == 0
    for name, condition in (("OcrFunction", "ReserveUploads"), ("BulkFunction", "ReserveBulk")):
        reserved = RESOURCES[name]["Properties"]["ReservedConcurrentExecutions"]["Fn::If"]
        assert reserved[0] == condition and reserved[2] == {"Ref": "AWS::NoValue"}
    assert TEMPLATE["Conditions"]["ReserveUploads"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "ReservedConcurrency"}, 0]}]
    }
    scaling = RESOURCES["UploadsEventSource"]["Properties"]["ScalingConfig"]["MaximumConcurrency"]["Fn::If"]
    assert scaling[2] == {"Ref": "UploadMaxConcurrency"}  # bounded even with nothing reserved
    assert not rules_pass(ReservedConcurrency=1) and rules_pass(ReservedConcurrency=2)


def test_queue_visibility_timeout_is_six_times_every_allowed_function_timeout() -> None:
    visibility = RESOURCES["UploadsQueue"]["Properties"]["VisibilityTimeout"]
    assert visibility == {"Fn::FindInMap": ["VisibilityTimeout", {"Ref": "TimeoutSeconds"}, "Seconds"]}
    allowed = PARAMETERS["TimeoutSeconds"]["AllowedValues"]
    assert max(allowed) <= 900 and PARAMETERS["TimeoutSeconds"]["Default"] in allowed
    for timeout in allowed:
        assert TEMPLATE["Mappings"]["VisibilityTimeout"][str(timeout)]["Seconds"] == min(6 * timeout, 43200)


def test_large_queue_batches_without_a_batching_window_are_refused_at_deploy() -> None:
    assert not rules_pass(QueueBatchSize=11, QueueBatchWindowSeconds=0)
    assert rules_pass(QueueBatchSize=10, QueueBatchWindowSeconds=0)
    assert rules_pass(QueueBatchSize=10000, QueueBatchWindowSeconds=1)
    assert rules_pass()  # the defaults deploy


def test_prefix_parameters_refuse_iam_wildcards() -> None:
    import re

    for name in PREFIX_PARAMETERS:
        pattern = re.compile(PARAMETERS[name]["AllowedPattern"])
        assert pattern.fullmatch(PARAMETERS[name]["Default"])
        for bad in ("in*/", "in?ut/", "/input/", "input"):
            assert not pattern.fullmatch(bad), (name, bad)


def retry_budget_seconds(task: dict[str, Any]) -> float:
    """Worst case for one Task: every attempt runs to its timeout, every retrier is exhausted."""
    attempts, delays = 1, 0.0
    for retrier in task.get("Retry", []):
        interval, rate, cap = (
            retrier.get("IntervalSeconds", 1),
            retrier.get("BackoffRate", 2.0),
            retrier.get("MaxDelaySeconds"),
        )
        for n in range(retrier.get("MaxAttempts", 3)):
            delay = interval * rate**n
            delays += min(delay, cap) if cap else delay
        attempts += retrier.get("MaxAttempts", 3)
    return attempts * task["TimeoutSeconds"] + delays


def test_every_express_child_fits_its_five_minutes_with_all_retries() -> None:
    mapped = DEFINITION["States"]["LabelAll"]
    assert mapped["ItemProcessor"]["ProcessorConfig"]["ExecutionType"] == "EXPRESS"
    task = mapped["ItemProcessor"]["States"]["LabelBatch"]
    function_timeout = RESOURCES["BulkFunction"]["Properties"]["Timeout"]
    assert isinstance(function_timeout, int) and function_timeout < task["TimeoutSeconds"]
    assert retry_budget_seconds(task) <= EXPRESS_LIMIT_SECONDS


def test_a_manual_run_with_no_input_gets_every_setting_the_map_reads() -> None:
    first = DEFINITION["States"][DEFINITION["StartAt"]]
    defaults = first["Parameters"]["defaults"]
    mapped = DEFINITION["States"]["LabelAll"]
    read = [
        value
        for key, value in {**mapped, **mapped["ItemBatcher"]}.items()
        if key.endswith("Path") and key != "ResultPath"
    ]
    assert read and all(path.removeprefix("$.") in defaults for path in read)
    assert 0 < defaults["tolerated_failure_percentage"] < 100


def test_a_failed_map_is_caught_summarised_and_fails_the_execution() -> None:
    mapped = DEFINITION["States"]["LabelAll"]
    (catch,) = mapped["Catch"]
    assert catch["ErrorEquals"] == ["States.ALL"]
    handler = DEFINITION["States"][catch["Next"]]
    assert handler["Parameters"]["FunctionName"] == "${SummarizeFunctionArn}"
    assert "error.$" in handler["Parameters"]["Payload"]
    assert DEFINITION["States"][handler["Next"]]["Type"] == "Fail"


def test_state_machine_logs_failures_and_an_alarm_tells_someone() -> None:
    logging = RESOURCES["BulkStateMachine"]["Properties"]["Logging"]
    assert logging["Level"] in ("ERROR", "ALL")
    assert logging["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"] == {
        "Fn::GetAtt": ["BulkStateMachineLogs", "Arn"]
    }
    alarm = RESOURCES["BulkRunFailedAlarm"]["Properties"]
    assert alarm["MetricName"] == "ExecutionsFailed" and alarm["Dimensions"][0]["Value"] == {"Ref": "BulkStateMachine"}
    for name, resource in RESOURCES.items():
        if resource["Type"] == "AWS::CloudWatch::Alarm":
            assert resource["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
    subscription = RESOURCES["AlarmEmailSubscription"]
    assert subscription["Condition"] == "EmailAlarms" and subscription["Properties"]["Endpoint"] == {
        "Ref": "AlarmEmail"
    }


def test_queue_accepts_notifications_from_this_stacks_bucket_only() -> None:
    bucket_name = RESOURCES["Bucket"]["Properties"]["BucketName"]
    (statement,) = RESOURCES["UploadsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    source_arn = statement["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"]
    assert source_arn[0] == "arn:${AWS::Partition}:s3:::${Name}" and source_arn[1]["Name"] == bucket_name
    assert "*" not in json.dumps(source_arn)
    derived = bucket_name["Fn::If"][1]["Fn::Sub"]
    assert all(part in derived for part in ("${AWS::StackName}", "${AWS::AccountId}", "${AWS::Region}"))


def test_upload_function_may_consume_only_its_own_queue() -> None:
    assert "Events" not in RESOURCES["OcrFunction"]["Properties"]  # a SAM SQS event adds an all-queues managed policy
    mapping = RESOURCES["UploadsEventSource"]["Properties"]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["UploadsQueue", "Arn"]}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    sqs = [s for s in statements(RESOURCES["OcrFunction"]) if any(a.startswith("sqs:") for a in as_list(s["Action"]))]
    assert sqs and all(s["Resource"] == {"Fn::GetAtt": ["UploadsQueue", "Arn"]} for s in sqs)


def test_records_outlive_the_stack_and_map_results_expire() -> None:
    bucket = RESOURCES["Bucket"]
    assert bucket["DeletionPolicy"] == "Retain" and bucket["UpdateReplacePolicy"] == "Retain"
    rules = {rule["Id"]: rule for rule in bucket["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert rules["ExpireMapResults"]["Prefix"] == {"Fn::Sub": "${RunsPrefix}map-results/"}
    assert rules["ExpireMapResults"]["ExpirationInDays"] == {"Ref": "MapResultsRetentionDays"}
    assert bucket["Properties"]["LoggingConfiguration"]["Fn::If"][0] == "LogAccess"


def test_architecture_is_a_parameter_with_arm64() -> None:
    assert set(PARAMETERS["Architecture"]["AllowedValues"]) == {"x86_64", "arm64"}
    assert TEMPLATE["Globals"]["Function"]["Architectures"] == [{"Ref": "Architecture"}]


def test_image_base_is_pinned_by_digest_and_installs_with_constraints() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = next(line for line in dockerfile.splitlines() if line.startswith(("FROM", "ARG BASE_IMAGE")))
    assert "@sha256:" in base and len(base.split("@sha256:")[1].split()[0]) == 64
    assert "-c " in dockerfile and "requirements/constraints.txt" in dockerfile

"""Error translation: every failure becomes a readable AwsError subclass."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from overcast.backends.aws import errors
from overcast.backends.aws.errors import (
    AwsError,
    CapacityError,
    CredentialsInvalid,
    PermissionMissing,
    Throttled,
    translate,
)

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def client_error(code, message, op="RunInstances", status=400):
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        op,
    )


def test_ec2_unauthorized_operation_with_encoded_message():
    exc = client_error(
        "UnauthorizedOperation",
        "You are not authorized to perform this operation. Encoded authorization failure "
        "message: AbCdEf123",
        op="CreateSubnet",
    )
    err = translate(exc, "ec2:CreateSubnet")
    assert isinstance(err, PermissionMissing)
    assert err.actions == ["ec2:CreateSubnet"]
    assert "ec2:CreateSubnet" in str(err) and "AbCdEf123" not in str(err)
    assert "polic" in str(err)  # says what to do


def test_ec2_unauthorized_operation_naming_the_action():
    exc = client_error(
        "UnauthorizedOperation",
        "You are not authorized to perform this operation. User: arn:aws:iam::1:user/u is not "
        "authorized to perform: ec2:RunInstances on resource: arn:aws:ec2:us-east-1:1:instance/*",
    )
    assert translate(exc).actions == ["ec2:RunInstances"]


def test_moto_access_denied():
    exc = client_error(
        "AccessDenied",
        "User: arn:aws:iam::123456789012:user/u is not authorized to perform: ec2:CreateSubnet",
        op="CreateSubnet",
        status=403,
    )
    err = translate(exc)
    assert isinstance(err, PermissionMissing)
    assert err.actions == ["ec2:CreateSubnet"]
    assert err.action == "ec2:CreateSubnet"


@pytest.mark.parametrize(
    ("service_action", "op"),
    [("logs:CreateLogGroup", "CreateLogGroup"), ("ecr:CreateRepository", "CreateRepository")],
)
def test_logs_and_ecr_denials_with_xml_body(service_action, op):
    body = (
        '<?xml version="1.0" encoding="utf-8"?>\n<ErrorResponse><Errors><Error><Code>AccessDenied'
        "</Code><Message>User: arn:aws:iam::123456789012:user/u is not authorized to perform: "
        f"{service_action}</Message><Type>Sender</Type></Error></Errors></ErrorResponse>"
    )
    err = translate(client_error("403", body, op=op, status=403))
    assert isinstance(err, PermissionMissing)
    assert err.actions == [service_action]
    assert "<" not in str(err)
    assert err.code == "AccessDenied"
    assert errors.code_of(client_error("403", body, op=op, status=403)) == "AccessDenied"


def test_bare_403_uses_the_hint():
    err = translate(client_error("403", "", op="GetLogEvents", status=403), "logs:GetLogEvents")
    assert isinstance(err, PermissionMissing)
    assert err.actions == ["logs:GetLogEvents"]


@pytest.mark.parametrize(
    ("code", "message", "zone"),
    [
        (
            "InsufficientInstanceCapacity",
            (
                "We currently do not have sufficient g4dn.xlarge capacity in the Availability Zone "
                "you requested (us-east-1a). Our system will be working on provisioning additional "
                "capacity."
            ),
            "us-east-1a",
        ),
        ("InsufficientCapacity", "Insufficient capacity.", None),
        (
            "Unsupported",
            (
                "Your requested instance type (p4d.24xlarge) is not supported in your requested "
                "Availability Zone (us-west-2d). Please retry your request by not specifying an "
                "Availability Zone or choosing us-west-2a, us-west-2b."
            ),
            "us-west-2d",
        ),
    ],
)
def test_capacity(code, message, zone):
    err = translate(client_error(code, message))
    assert isinstance(err, CapacityError)
    assert err.zone == zone
    assert err.retryable
    assert "zone" in str(err).lower()


@pytest.mark.parametrize("code", ["RequestLimitExceeded", "Throttling", "ThrottlingException"])
def test_throttling(code):
    err = translate(client_error(code, "Rate exceeded"))
    assert isinstance(err, Throttled)
    assert err.retryable


def test_bad_credentials_never_echo_secrets():
    err = translate(client_error("AuthFailure", "AWS was not able to validate the credentials."))
    assert isinstance(err, CredentialsInvalid)
    assert not err.retryable
    assert SECRET not in str(err)


def test_other_errors_are_generic_and_short():
    err = translate(client_error("InvalidSubnet.Conflict", "The CIDR conflicts", op="CreateSubnet"))
    assert type(err) is AwsError
    assert "CreateSubnet" in str(err) and "InvalidSubnet.Conflict" in str(err)
    assert len(str(err).splitlines()) < 10


def test_instance_profile_not_ready_is_retryable():
    err = translate(
        client_error(
            "InvalidParameterValue",
            "Value (alice) for parameter iamInstanceProfile.name "
            "is invalid. Invalid IAM Instance Profile name",
        )
    )
    assert err.retryable


def test_wrap_and_context_manager():
    @errors.wrap
    def boom():
        raise client_error("Throttling", "slow down")

    with pytest.raises(Throttled) as info:
        boom()
    assert isinstance(info.value.__cause__, ClientError)

    with pytest.raises(PermissionMissing) as denied, errors.aws_errors("iam:CreateRole"):
        raise client_error("AccessDenied", "no", op="CreateRole", status=403)
    assert denied.value.actions == ["iam:CreateRole"]

    with pytest.raises(CredentialsInvalid), errors.aws_errors():
        raise NoCredentialsError()
    with pytest.raises(AwsError) as unreachable, errors.aws_errors():
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert unreachable.value.retryable and "127.0.0.1:1" in str(unreachable.value)


def test_action_guessed_from_the_last_call():
    errors.note_call("ec2:CreateSubnet")
    err = translate(client_error("UnauthorizedOperation", "not allowed", op="CreateSubnet"))
    assert err.actions == ["ec2:CreateSubnet"]

"""`make deploy` refuses before uploading what CloudFormation would refuse after (scripts/predeploy_check.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import predeploy_check

SAMCONFIG = """
version = 0.1
[prod.global.parameters]
stack_name = "ld-audiences-prod"
region = "us-east-1"
[prod.deploy.parameters]
parameter_overrides = [{overrides}]
"""
CLIENT_SIDE_ID = "LaunchDarklyClientSideId=0123456789abcdef01234567"


def run(
    tmp_path: Path,
    *args: str,
    samconfig_overrides: str = "",
    previous: dict[str, str] | None = None,
) -> int:
    samconfig = tmp_path / "samconfig.toml"
    samconfig.write_text(SAMCONFIG.format(overrides=samconfig_overrides))
    return predeploy_check.main(["--config-env", "prod", "--samconfig", str(samconfig), *args], lambda env: previous)


def test_an_empty_client_side_id_is_refused_for_the_segment_audiences_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path) == 2
    err = capsys.readouterr().err
    assert "LaunchDarklyClientSideId" in err
    assert "nothing was uploaded" in err
    assert "make deploy SAM_ENV=prod PARAMETER_OVERRIDES='LaunchDarklyClientSideId=<value>'" in err


def test_the_rest_writer_without_its_project_and_environment_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, "LaunchDarklyWriter=rest", "LaunchDarklyProjectKey=default") == 2
    err = capsys.readouterr().err
    assert "The rest writer needs LaunchDarklyProjectKey and LaunchDarklyEnvironmentKey" in err
    assert "LaunchDarklyEnvironmentKey=''" in err
    assert "LaunchDarklyClientSideId" not in err  # that rule holds only for segment-audiences


def test_a_good_configuration_passes_and_prints_the_merged_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    samconfig = '"LogRetentionInDays=90", "AlarmEmail=oncall@example.com"'
    args = [CLIENT_SIDE_ID, "AlarmEmail=team@example.com", "--print-overrides"]
    assert run(tmp_path, *args, samconfig_overrides=samconfig) == 0
    out = capsys.readouterr().out.split()
    # samconfig's overrides stay, the command line's win: sam deploy would otherwise drop samconfig's list
    assert out == ["LogRetentionInDays=90", "AlarmEmail=team@example.com", CLIENT_SIDE_ID]


def test_the_rest_writer_with_its_keys_passes(tmp_path: Path) -> None:
    keys = ["LaunchDarklyWriter=rest", "LaunchDarklyProjectKey=default", "LaunchDarklyEnvironmentKey=production"]
    assert run(tmp_path, *keys) == 0


def test_an_existing_stack_keeps_the_values_it_was_given(tmp_path: Path) -> None:
    # sam deploy asks CloudFormation to keep the current value of every parameter it is not given.
    assert run(tmp_path, previous={"LaunchDarklyClientSideId": "0123456789abcdef01234567"}) == 0
    assert run(tmp_path, "LaunchDarklyClientSideId=", previous={"LaunchDarklyClientSideId": "abc"}) == 2


def test_a_guided_deploy_offers_defaults_not_the_stacks_values(tmp_path: Path) -> None:
    def previous_must_not_be_read(env: predeploy_check.Environment) -> dict[str, str]:
        raise AssertionError("a guided deploy offers samconfig's values and the template's defaults")

    samconfig = tmp_path / "samconfig.toml"
    samconfig.write_text(SAMCONFIG.format(overrides=""))
    args = ["--config-env", "prod", "--samconfig", str(samconfig), "--guided"]
    assert predeploy_check.main(args, previous_must_not_be_read) == 2
    assert predeploy_check.main([*args, CLIENT_SIDE_ID], previous_must_not_be_read) == 0


@pytest.mark.parametrize(
    ("override", "said"),
    [
        ("ChunkSize=5000", "is above 1000"),
        ("LaunchDarklyWriter=graphql", "is not one of segment-audiences, rest"),
        ("AlarmEmail=not an address", "does not match"),
        ("IpRateLimitPerMinute=5", "IpRateLimitPerMinute must be 0 (no web ACL) or at least 10"),
        ("AwsEndpointUrl=http://localhost", "AwsEndpointUrl is not a parameter of template.yaml"),
        ("LaunchDarklyClientSideId", "write Name=value"),
    ],
)
def test_other_values_cloudformation_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, said: str
) -> None:
    assert run(tmp_path, CLIENT_SIDE_ID, override) == 2
    assert said in capsys.readouterr().err


def test_an_unknown_environment_names_the_known_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samconfig = tmp_path / "samconfig.toml"
    samconfig.write_text(SAMCONFIG.format(overrides=""))
    assert predeploy_check.main(["--config-env", "staging", "--samconfig", str(samconfig)], lambda env: None) == 2
    assert "no environment 'staging' (it has prod)" in capsys.readouterr().err


def test_the_repositorys_samconfig_is_read_like_sam_reads_it() -> None:
    config = predeploy_check.tomllib.loads(predeploy_check.SAMCONFIG.read_text())
    prod = predeploy_check.read_environment(config, "prod")
    assert (prod.stack_name, prod.region) == ("ld-audiences-prod", "us-east-1")
    assert prod.overrides == {"LogRetentionInDays": "90"}

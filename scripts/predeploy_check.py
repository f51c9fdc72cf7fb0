"""What `make deploy` checks before anything is built or uploaded: the parameters CloudFormation would refuse.

`sam deploy` uploads the build and creates a change set before CloudFormation reads the template's Rules
and each parameter's constraints, so an empty LaunchDarklyClientSideId fails minutes later, after the
upload. This reads the same decisions from template.yaml (its Rules, and each parameter's AllowedValues,
AllowedPattern, MinValue/MaxValue, MinLength/MaxLength) and the values `sam deploy` would pass:

* the environment's `parameter_overrides` in samconfig.toml, then the overrides given on the command line
  (make's PARAMETER_OVERRIDES), which win;
* for a parameter given neither way: the stack's current value when the stack exists (sam deploy asks
  CloudFormation to keep it), else the template's default. A guided deploy offers the defaults instead.

It exits 0 when CloudFormation would take them (with --print-overrides printing the merged overrides for
`sam deploy --parameter-overrides`, and nothing else); otherwise it names each refused parameter and how to
set it, and exits 2.

    python scripts/predeploy_check.py --config-env prod [--guided] [--print-overrides] [Name=value ...]

Runs with the SAM CLI's own environment (.venv-tools: PyYAML, boto3), so it imports nothing of the project.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
SAMCONFIG = ROOT / "samconfig.toml"
USAGE_ERROR = 2


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short forms (!Ref, !GetAtt, !Sub, ...) into long forms."""


def _construct_cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    key = suffix if suffix in {"Ref", "Condition"} else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {key: value}


CfnLoader.add_multi_constructor("!", _construct_cfn_tag)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        loaded = yaml.load(handle, Loader=CfnLoader)  # noqa: S506 - a SafeLoader subclass
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} is not a CloudFormation template")
    return loaded


@dataclass(frozen=True)
class Environment:
    """One samconfig.toml environment, as `sam deploy --config-env NAME` reads it."""

    name: str
    stack_name: str
    region: str | None
    profile: str | None
    overrides: dict[str, str]


@dataclass(frozen=True)
class Problem:
    parameters: tuple[str, ...]
    message: str


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """`Name=value` items (samconfig's list, or its one space-separated string, or the command line's)."""
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"cannot read the parameter override {item!r}: write Name=value")
        overrides[name] = value
    return overrides


def read_environment(config: Mapping[str, Any], name: str) -> Environment:
    if name not in config:
        known = ", ".join(k for k in config if isinstance(config[k], dict))
        raise ValueError(f"samconfig.toml has no environment {name!r} (it has {known}): set SAM_ENV to one of them")
    env = config[name]
    # sam reads a command's parameters over the environment's global ones.
    settings = {**env.get("global", {}).get("parameters", {}), **env.get("deploy", {}).get("parameters", {})}
    raw = settings.get("parameter_overrides", [])
    items = shlex.split(raw) if isinstance(raw, str) else [str(item) for item in raw]
    if "stack_name" not in settings:
        raise ValueError(f"samconfig.toml's [{name}] environment names no stack_name")
    return Environment(
        name=name,
        stack_name=settings["stack_name"],
        region=settings.get("region"),
        profile=settings.get("profile"),
        overrides=parse_overrides(items),
    )


def effective_values(
    template: Mapping[str, Any], overrides: Mapping[str, str], previous: Mapping[str, str] | None
) -> dict[str, str]:
    """What CloudFormation will see per parameter (None for `previous`: a new stack, or a guided deploy)."""
    values = {}
    for name, declared in template["Parameters"].items():
        if name in overrides:
            values[name] = overrides[name]
        elif previous is not None and name in previous:
            values[name] = previous[name]
        elif "Default" in declared:
            values[name] = str(declared["Default"])
    return values


def find_problems(
    template: Mapping[str, Any], overrides: Mapping[str, str], values: Mapping[str, str]
) -> list[Problem]:
    declared = template["Parameters"]
    problems = [
        Problem((name,), f"{name} is not a parameter of template.yaml") for name in overrides if name not in declared
    ]
    for name, spec in declared.items():
        if name not in values:
            problems.append(Problem((name,), f"{name} has no default and no value"))
        else:
            problems.extend(constraint_problems(name, spec, values[name]))
    for rule_name, rule in template.get("Rules", {}).items():
        if "RuleCondition" in rule and not _evaluate(rule["RuleCondition"], values):
            continue
        when = ", ".join(f"{n}={values.get(n, '')}" for n in sorted(_refs(rule.get("RuleCondition", {}))))
        for assertion in rule["Assertions"]:
            if not _evaluate(assertion["Assert"], values):
                named = tuple(sorted(_refs(assertion["Assert"])))
                now = ", ".join(f"{n}={values.get(n, '')!r}" for n in named)
                context = f"rule {rule_name}, with {when}" if when else f"rule {rule_name}"
                problems.append(Problem(named, f"{assertion['AssertDescription']} ({context}; now {now})"))
    return problems


def constraint_problems(name: str, spec: Mapping[str, Any], value: str) -> list[Problem]:
    def problem(why: str) -> list[Problem]:
        return [Problem((name,), f"{name}={value} {why}")]

    if "AllowedValues" in spec and value not in [str(v) for v in spec["AllowedValues"]]:
        return problem(f"is not one of {', '.join(str(v) for v in spec['AllowedValues'])}")
    if spec.get("Type") == "Number":
        try:
            number = float(value)
        except ValueError:
            return problem("is not a number")
        if "MinValue" in spec and number < float(spec["MinValue"]):
            return problem(f"is below {spec['MinValue']}")
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            return problem(f"is above {spec['MaxValue']}")
        return []
    if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], value):
        return problem(f"does not match {spec['AllowedPattern']} ({spec.get('ConstraintDescription', 'its pattern')})")
    if "MinLength" in spec and len(value) < int(spec["MinLength"]):
        return problem(f"is shorter than {spec['MinLength']} characters")
    if "MaxLength" in spec and len(value) > int(spec["MaxLength"]):
        return problem(f"is longer than {spec['MaxLength']} characters")
    return []


def _evaluate(expression: Any, values: Mapping[str, str]) -> Any:
    """The rule functions template.yaml uses, on parameter values (strings, as CloudFormation compares them)."""
    if not isinstance(expression, dict):
        return [_evaluate(e, values) for e in expression] if isinstance(expression, list) else str(expression)
    ((function, argument),) = expression.items()
    if function == "Ref":
        return values.get(argument, "")
    args = [_evaluate(a, values) for a in argument]
    if function == "Fn::Equals":
        return args[0] == args[1]
    if function == "Fn::Not":
        return not args[0]
    if function == "Fn::And":
        return all(args)
    if function == "Fn::Or":
        return any(args)
    if function == "Fn::Contains":
        return args[1] in args[0]
    raise ValueError(f"template.yaml's Rules use {function}, which this check does not know: teach it here")


def _refs(expression: Any) -> set[str]:
    if isinstance(expression, dict):
        if set(expression) == {"Ref"}:
            return {expression["Ref"]}
        return set().union(*(_refs(v) for v in expression.values()))
    if isinstance(expression, list):
        return set().union(*(_refs(v) for v in expression))
    return set()


def stack_parameters(env: Environment) -> dict[str, str] | None:
    """The existing stack's parameter values, or None when there is no stack yet."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    session = boto3.Session(profile_name=env.profile, region_name=env.region)
    try:
        stacks = session.client("cloudformation").describe_stacks(StackName=env.stack_name)["Stacks"]
    except ClientError as error:
        if "does not exist" in str(error):
            return None
        raise StackUnreadable(str(error)) from error
    except BotoCoreError as error:
        raise StackUnreadable(str(error)) from error
    # sam deploy treats a stack still in review (a first change set never executed) as a new one.
    if stacks[0]["StackStatus"] == "REVIEW_IN_PROGRESS":
        return None
    return {p["ParameterKey"]: p.get("ParameterValue", "") for p in stacks[0].get("Parameters", [])}


class StackUnreadable(Exception):
    """CloudFormation could not be asked (credentials, region, permissions)."""


def how_to_set(env: Environment, parameters: Sequence[str]) -> str:
    assignments = " ".join(f"{p}=<value>" for p in parameters)
    return (
        f"    set it: make deploy SAM_ENV={env.name} PARAMETER_OVERRIDES='{assignments}' (GUIDED=1 offers it as the "
        f"default), or add it to parameter_overrides under [{env.name}.deploy.parameters] in samconfig.toml"
    )


def main(
    argv: Sequence[str] | None = None,
    previous_values: Callable[[Environment], dict[str, str] | None] = stack_parameters,
) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--config-env", default="default", help="samconfig.toml environment (make's SAM_ENV)")
    parser.add_argument("--guided", action="store_true", help="sam deploy --guided (offers defaults, not the stack's)")
    parser.add_argument("--print-overrides", action="store_true", help="print the overrides for sam deploy")
    parser.add_argument("--template", type=Path, default=TEMPLATE)
    parser.add_argument("--samconfig", type=Path, default=SAMCONFIG)
    parser.add_argument("overrides", nargs="*", metavar="Name=value", help="make's PARAMETER_OVERRIDES")
    args = parser.parse_args(argv)
    try:
        template = load_template(args.template)
        env = read_environment(tomllib.loads(args.samconfig.read_text(encoding="utf-8")), args.config_env)
        overrides = {**env.overrides, **parse_overrides(args.overrides)}
        previous = None if args.guided else previous_values(env)
    except StackUnreadable as error:
        print(
            f"deploy-check: cannot read stack {env.stack_name} to see its current parameters: {error}\n"
            "    sam deploy needs the same access: set AWS_PROFILE or run `aws configure` (docs/DEPLOY.md)",
            file=sys.stderr,
        )
        return USAGE_ERROR
    except ValueError as error:
        print(f"deploy-check: {error}", file=sys.stderr)
        return USAGE_ERROR
    problems = find_problems(template, overrides, effective_values(template, overrides, previous))
    mode = "guided" if args.guided else "new stack" if previous is None else "update"
    where = f"stack {env.stack_name} (samconfig environment {env.name}, {mode})"
    if problems:
        print(f"deploy-check: CloudFormation would refuse {where}; nothing was uploaded:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem.message}\n{how_to_set(env, problem.parameters)}", file=sys.stderr)
        return USAGE_ERROR
    if args.print_overrides:
        print(" ".join(f"{name}={value}" for name, value in overrides.items()))
    else:
        print(f"deploy-check: the parameters of {where} pass template.yaml's Rules and constraints", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What `make sam-build` produced is what the tests ran, and `sam deploy --guided` gets as far as AWS
credentials on its defaults.

These read `.aws-sam/build`, which `make test` builds first (`make sam-build`), and run the SAM CLI from
`.venv-tools`. Without them they skip, unless LD_AUDIENCES_REQUIRE_SAM_BUILD is set (make test sets it):
then a missing build fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.unit.test_template import load_template

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / ".aws-sam" / "build"
LAYER_SITE = BUILD / "SharedLayer" / "python"
SAM = ROOT / ".venv-tools" / "bin" / "sam"
CONSTRAINTS = ROOT / "constraints.txt"
REQUIREMENTS = ROOT / "layers" / "shared" / "requirements.txt"
# The Lambda python3.13 runtime ships these; the layer must not shadow them.
RUNTIME_PROVIDED = {"boto3", "botocore", "s3transfer"}
ELF_MACHINE_AARCH64 = 0xB7


def require(path: Path, what: str) -> Path:
    if not path.exists():
        message = f"{path.relative_to(ROOT)} missing: {what}"
        if os.environ.get("LD_AUDIENCES_REQUIRE_SAM_BUILD"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def site() -> Path:
    return require(LAYER_SITE, "run `make sam-build` (make test does)")


def pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line of a requirements or constraints file."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{path.name}: {line!r} is not an exact pin"
            found[canonicalize_name(requirement.name)] = specifier.version
    return found


def installed(site: Path) -> dict[str, str]:
    """name -> version of every distribution installed in a site directory (from its .dist-info)."""
    found = {}
    for dist_info in site.glob("*.dist-info"):
        fields = dict(line.split(": ", 1) for line in (dist_info / "METADATA").read_text().splitlines() if ": " in line)
        found[canonicalize_name(fields["Name"])] = fields["Version"]
    return found


def test_layer_holds_exactly_the_tested_versions(site: Path) -> None:
    layer, tested = installed(site), pins(CONSTRAINTS)
    assert layer, "no distribution in the layer"
    different = {name: (version, tested.get(name)) for name, version in layer.items() if tested.get(name) != version}
    assert not different, f"layer version != constraints.txt (what the tests ran): {different}"
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            name = canonicalize_name(requirement.name)
            assert name in layer, f"{requirement.name} is not in the layer"
            assert requirement.specifier.contains(layer[name]), f"{name} {layer[name]} does not satisfy {line}"
    assert not RUNTIME_PROVIDED & layer.keys(), "the layer would shadow the runtime's boto3/botocore"
    assert (site / "ld_audiences" / "__init__.py").is_file()


def test_layer_binaries_are_for_lambda_arm64_python313(site: Path) -> None:
    extensions = list(site.rglob("*.so"))
    assert any("pydantic_core" in str(p) for p in extensions), "pydantic_core's extension is missing"
    for extension in extensions:
        assert re.search(r"\.(cpython-313-aarch64-linux-gnu|abi3)\.so$", extension.name), extension.name
        header = extension.read_bytes()[:20]
        assert header[:4] == b"\x7fELF", extension
        assert int.from_bytes(header[18:20], "little") == ELF_MACHINE_AARCH64, f"{extension} is not arm64"


def test_layer_bytecode_is_for_python313_only(site: Path) -> None:
    """All or nothing: every module compiled by 3.13, hash-based and unchecked (Lambda's filesystem is
    read-only and the zip's file times mean nothing), or none at all (no 3.13 found: the build warned)."""
    compiled = list(site.rglob("*.pyc"))
    foreign = sorted({p.name for p in compiled if not p.name.endswith(".cpython-313.pyc")})
    assert not foreign, f"bytecode of another Python: {foreign[:5]}"
    if not compiled:
        pytest.skip("layer built without bytecode (no Python 3.13 on the build machine)")
    modules = [p for p in site.rglob("*.py") if "__pycache__" not in p.parts]
    missing = [p for p in modules if not (p.parent / "__pycache__" / f"{p.stem}.cpython-313.pyc").exists()]
    assert not missing, f"{len(missing)} modules without bytecode, e.g. {missing[:3]}"
    for pyc in compiled[:50]:
        flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
        assert flags == 0b01, f"{pyc}: not unchecked-hash bytecode (flags {flags:#b})"


def test_guided_deploy_takes_the_defaults_up_to_aws_credentials(tmp_path: Path) -> None:
    """A new user pressing Enter at every question of `sam deploy --guided` reaches the AWS call: no
    local-only parameter, no "has no authentication" question that ends in "Security Constraints Not
    Satisfied!"."""
    require(BUILD / "template.yaml", "run `make sam-build` (make test does)")
    sam = require(SAM, "run `make tools`")
    config = tmp_path / "samconfig.toml"  # guided may write the answers back: never into the repository
    shutil.copy(ROOT / "samconfig.toml", config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        SAM_CLI_TELEMETRY="0",
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        # No instance-metadata or container credential lookups leave the machine.
        AWS_EC2_METADATA_DISABLED="true",
    )
    result = subprocess.run(  # noqa: S603 (the project's own SAM CLI)
        [str(sam), "deploy", "--guided", "--config-file", str(config)],
        input="\n" * 100,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Unable to locate credentials" in output, output
    assert "has no authentication" not in output
    asked = re.findall(r"Parameter (\w+) \[", output)
    assert asked == list(load_template()["Parameters"]), "guided asks every template parameter, once"
    assert config.read_text() == (ROOT / "samconfig.toml").read_text()

"""What a command acts on, from its options, the environment and the stack: the deployment, the audience and
where its segment is in LaunchDarkly. Whatever is missing is a UsageError naming the option that gives it."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from ld_audiences.config import DEFAULT_LD_BASE_URL
from ld_audiences_cli import deployment
from ld_audiences_cli.exit_status import UsageError

if TYPE_CHECKING:
    from ld_audiences.audiences import AudienceReader


def find_deployment(args: argparse.Namespace, *needed: str) -> deployment.Deployment:
    try:
        found = deployment.find(
            stack_name=args.stack_name,
            table=getattr(args, "table", None),
            queue_url=args.queue_url,
            dlq_url=args.dlq_url,
            endpoint_url=args.endpoint_url,
            region=args.region,
            profile=args.profile,
        )
        found.need(*needed)
    except deployment.DeploymentError as exc:
        raise UsageError(str(exc)) from None
    return found


def audience(reader: AudienceReader, args: argparse.Namespace, *, need_key: bool) -> tuple[str, str]:
    """The audience's context kind and key: as given, else from its summary item in the state table."""
    known = [a for a in reader.audiences() if a.audience_id == args.audience]
    kind = args.context_kind
    if kind is None:
        kinds = sorted({a.context_kind for a in known})
        if len(kinds) != 1:
            found = f"has context kinds {', '.join(kinds)}" if kinds else "has no summary in the state table"
            raise UsageError(f"audience {args.audience} {found}: give --context-kind")
        kind = kinds[0]
    summary = next((a for a in known if a.context_kind == kind), None)
    key = args.audience_key or (summary.audience_key if summary else "")
    if need_key and not key:
        raise UsageError(f"audience {args.audience} ({kind}) has no summary in the state table: give --audience-key")
    return kind, key


def launchdarkly_settings(args: argparse.Namespace, where: deployment.Deployment) -> tuple[str, str, str, str]:
    """Writer, project key, environment key and base URL: the options, the environment, the stack's parameters."""
    stack = where.parameters
    writer = args.segment_writer or stack.get("LaunchDarklyWriter") or "segment-audiences"
    project = args.project_key or os.environ.get("LD_PROJECT_KEY") or stack.get("LaunchDarklyProjectKey")
    environment = (
        args.environment_key or os.environ.get("LD_ENVIRONMENT_KEY") or stack.get("LaunchDarklyEnvironmentKey")
    )
    if not (project and environment):
        raise UsageError(
            "give --project-key and --environment-key: where the segment is (for the segment-audiences writer, "
            "the project and environment of the client-side ID)"
        )
    base_url = args.base_url or stack.get("LaunchDarklyBaseUrl") or DEFAULT_LD_BASE_URL
    return writer, project, environment, base_url


def token(args: argparse.Namespace, what: str) -> str:
    """The LaunchDarkly API access token: --token, else LD_API_TOKEN."""
    found: str = args.token or os.environ.get("LD_API_TOKEN", "")
    if not found:
        raise UsageError(f"no access token: pass --token or set LD_API_TOKEN ({what})")
    return found

"""``serve``: the web service and its browser page."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medforensics.cli._common import (
    ALLOW_MODIFIED_OPT,
    TRAINING_FREE,
    app,
    check_run_kind,
    fail,
    training_free_name,
)
from medforensics.errors import ConfigError, MedForensicsError


@app.command("serve")
def serve_cmd(
    source_model: Path = typer.Option(..., "--source-model", help="Trained source run directory."),
    forgery_model: str = typer.Option(
        TRAINING_FREE, "--forgery-model",
        help=f"Forgery run directory; default '{TRAINING_FREE}', the training-free detector."),
    no_forgery: bool = typer.Option(
        False, "--no-forgery", help="No forgery analysis (/v1/forgery answers 503)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback default)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    token: Optional[str] = typer.Option(
        None, "--token", envvar="MEDFORENSICS_TOKEN",
        help="Bearer token required on /v1 (prefer the MEDFORENSICS_TOKEN variable)."),
    max_upload_mb: float = typer.Option(200, "--max-upload-mb", help="Largest upload (MiB)."),
    timeout: float = typer.Option(60, "--timeout", help="Time limit per upload+analysis (s)."),
    allow_no_token: bool = typer.Option(
        False, "--allow-no-token", help="Allow a non-loopback --host without a token."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    allow_modified_run: bool = ALLOW_MODIFIED_OPT,
    allow_unmasked_reports: bool = typer.Option(
        False, "--allow-unmasked-reports", help="Let /v1/report?mask_identifiers=false show "
        "patient and institution identifiers (refused with 403 otherwise)."),
) -> None:
    """Web service + browser page: upload an image, get the device verdict and forgery map.

    The answers of /v1/identify and /v1/forgery have the shape of `identify --json` and
    `forgery detect --json` lines."""
    from medforensics.service.app import create_app
    from medforensics.service.server import is_loopback, loopback_hosts, serve

    local = is_loopback(host)
    if not local and token is None and not allow_no_token:
        fail(ConfigError(f"--host {host} is reachable from other machines: set --token (or "
                         "MEDFORENSICS_TOKEN), or pass --allow-no-token"))
    forgery = None if no_forgery else training_free_name(forgery_model)
    check_run_kind(source_model, "source", "--source-model")
    check_run_kind(forgery, "forgery", "--forgery-model")
    try:
        web = create_app(source_model, forgery, token=token,
                         max_upload_bytes=int(max_upload_mb * 2**20), timeout_s=timeout,
                         allowed_hosts=loopback_hosts(host) if local else None, device=device,
                         allow_modified_run=allow_modified_run,
                         allow_unmasked_reports=allow_unmasked_reports)
    except MedForensicsError as exc:
        fail(exc)
    shown = f"[{host}]" if ":" in host else host
    what = ("none" if forgery is None else "training-free cues" if forgery == TRAINING_FREE
            else str(forgery))
    typer.echo(f"medforensics service on http://{shown}:{port}/ (API schema: /openapi.json); "
               f"forgery detector: {what}; token: {'required' if token else 'none'}; "
               "Ctrl-C stops")
    serve(web, host=host, port=port)

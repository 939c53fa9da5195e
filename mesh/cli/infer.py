"""`murmur infer MODEL --input FILE.json`: one inference request through any node, outputs printed.

FILE.json is an Open Inference Protocol request body, as curl would send it:

    {"inputs": [{"name": "window", "shape": [1, 3, 64], "datatype": "FP32", "data": [...]}]}

The node serves it or forwards it to a ready replica (docs/inference.md). Outputs are
printed one per line as `NAME SHAPE DATATYPE: data`, or the whole response with --json.
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from pathlib import Path
from typing import Any

from mesh.cli.client import CliError, NodeClient
from mesh.cli.helptext import command

INPUT_MAX_BYTES = 64 * 1024 * 1024
PRIORITIES = ("critical", "normal", "bulk")


def format_outputs(doc: Any) -> str:
    """A response's outputs, one line each."""
    outputs = doc.get("outputs") if isinstance(doc, dict) else None
    lines = []
    for out in outputs if isinstance(outputs, list) else []:
        if isinstance(out, dict):
            data = json.dumps(out.get("data"))
            lines.append(f"{out.get('name')} {out.get('shape')} {out.get('datatype')}: {data}")
    return "\n".join(lines) or "(no outputs)"


def read_request(path: str) -> bytes:
    """The request body in FILE.json, checked to be a JSON object with inputs."""
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > INPUT_MAX_BYTES:
            raise CliError(f"{path}: {size} bytes, over the {INPUT_MAX_BYTES} bytes a request may carry")
        body = file.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise CliError(f"{path} is not JSON; it holds an inference request like {_EXAMPLE}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise CliError(f"{path} is not an inference request; it needs an inputs list, like {_EXAMPLE}")
    return body


_EXAMPLE = '{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0.1, 0.2, 0.3]}]}'


def cmd_infer(args: argparse.Namespace) -> int:
    body = read_request(args.input)
    headers = {"Content-Type": "application/json"}
    if args.priority:
        headers["Murmur-Priority"] = args.priority
    if args.token_file:
        try:
            headers["Authorization"] = "Bearer " + Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise CliError(f"cannot read {args.token_file}: {exc.strerror or exc}") from None
    name = urllib.parse.quote(args.model, safe="")
    path = f"/v2/models/{name}" + (
        f"/versions/{urllib.parse.quote(args.version, safe='')}" if args.version else ""
    )
    status, doc = NodeClient(args.node, timeout_s=args.timeout).exchange(
        "POST", path + "/infer", body=body, headers=headers
    )
    if status != 200:
        error = doc.get("error") if isinstance(doc, dict) else doc
        raise CliError(f"{args.model}: HTTP {status}: {error}")
    print(json.dumps(doc, indent=2) if args.json else format_outputs(doc))
    return 0


def register(sub: Any, node_help: str) -> None:
    """Add infer to the `murmur` subcommands."""
    infer = command(
        sub,
        "infer",
        summary="send one inference request (Open Inference Protocol) and print the outputs",
        description="POST FILE.json, an Open Inference Protocol request body, to a node's "
        "/v2/models/MODEL/infer. Any node answers: it runs the model if it holds a ready replica, "
        "or forwards the request to one. Outputs print as NAME SHAPE DATATYPE: data.",
        examples=[
            "murmur infer vibration --input window.json",
            "murmur infer vibration --input window.json --node http://10.0.0.7:7800 --priority critical",
            "murmur infer classifier --input image.json --json",
        ],
    )
    infer.add_argument("model", help="the model (deployment) name")
    infer.add_argument("--input", required=True, metavar="FILE.json", help="the request body (JSON)")
    infer.add_argument("--version", default=None, help="a model version the replica must serve")
    infer.add_argument("--priority", choices=PRIORITIES, default=None, help="the request's priority")
    infer.add_argument("--token-file", default=None, help="a file holding the cluster's inference token")
    infer.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer")
    infer.add_argument("--json", action="store_true", help="print the whole response as JSON")
    infer.add_argument("--node", default=argparse.SUPPRESS, help=node_help)
    infer.set_defaults(func=cmd_infer)

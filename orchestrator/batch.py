"""``python -m orchestrator.batch --endpoint E --input jobs.jsonl --output results.jsonl``

Pushes a file of jobs through an endpoint from inside the Ray cluster (``Client.in_cluster()``, no HTTP),
reports progress on stdout (visible in ``ray job logs``), and writes one result per input line, in input
order. Resumable: submitted job ids are recorded next to the output (``<output>.ids``) as they are accepted,
so a re-run submits only the lines never accepted and collects the rest (with the same endpoint and input:
ids recorded for another endpoint, or past the input's end, are refused).

Nothing is submitted from a file with a line that is not JSON; that line is named. Such an error, an
unknown endpoint or a full queue ends the run with exit code 1 and one line on stderr; exit code 2 when
some jobs did not complete.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator.client import FINAL_NAMES, InClusterClient
from orchestrator.core.errors import InvalidInput, RippleError
from orchestrator.core.jobs import inputs_of_lines
from orchestrator.core.wait_reason import waiting_line

log = logging.getLogger("ripple.batch")

GONE = "job not found: deleted, if it ended longer ago than a finished job is kept (RIPPLE_KEEP_RESULTS_S)"


def _load_ids(path: Path, endpoint: str, n_inputs: int) -> dict[int, str]:
    """Job ids an earlier run submitted, by input line (``path``: one JSON object per accepted job).

    Raises InvalidInput when they went to another endpoint, or name a line past the end of the input
    (the input changed since): their results are not this run's, so use another ``--output``. A torn last
    line (that run was killed while writing it) is dropped: its job is submitted again."""
    ids: dict[int, str] = {}
    if not path.exists():
        return ids
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    for n, line in enumerate(rows, 1):
        try:
            row = json.loads(line)
        except ValueError:
            if n == len(rows):
                break
            raise InvalidInput(f"{path}, line {n}: not valid JSON; use another --output") from None
        if row.get("endpoint", endpoint) != endpoint:
            raise InvalidInput(
                f"{path} records jobs submitted to endpoint {row['endpoint']!r}, not {endpoint!r}: "
                "use another --output"
            )
        if int(row["line"]) >= n_inputs:
            raise InvalidInput(
                f"{path} records a job for input line {int(row['line']) + 1}, and the input has "
                f"{n_inputs} jobs now: use another --output"
            )
        ids[int(row["line"])] = str(row["id"])
    return ids


def read_inputs(path: Path) -> list[Any]:
    """The job inputs of a JSON Lines file (:func:`~orchestrator.core.jobs.inputs_of_lines`). Raises
    InvalidInput for a file that cannot be read, a line that is not JSON, or a file with no job."""
    try:
        with path.open(encoding="utf-8") as f:
            return inputs_of_lines(f, str(path))
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidInput(f"cannot read {path}: {why}") from None


def run(
    endpoint: str,
    input_path: Path,
    output_path: Path,
    *,
    namespace: str = "ripple",
    chunk: int = 1000,
    poll_s: float = 1.0,
    timeout_s: float = 86_400.0,
    client: Any = None,
    inputs: list[Any] | None = None,
) -> dict[str, int]:
    """Submit what is not yet submitted, wait for every job, write results in order; returns counts.
    ``inputs``: those of ``input_path``, when the caller read them already (:func:`read_inputs`)."""
    inputs = read_inputs(input_path) if inputs is None else inputs
    client = client or InClusterClient(namespace)
    ids_path = output_path.with_name(output_path.name + ".ids")
    ids = _load_ids(ids_path, endpoint, len(inputs))
    todo = [i for i in range(len(inputs)) if i not in ids]
    print(
        f"{len(inputs)} jobs in {input_path}; {len(ids)} already submitted; submitting {len(todo)}",
        flush=True,
    )
    with ids_path.open("a") as log:
        for start in range(0, len(todo), chunk):
            lines = todo[start : start + chunk]
            for i, job_id in zip(
                lines, client.submit_many(endpoint, [inputs[i] for i in lines]), strict=True
            ):
                ids[i] = job_id
                log.write(json.dumps({"line": i, "id": job_id, "endpoint": endpoint}) + "\n")
            log.flush()
            os.fsync(log.fileno())
            print(f"submitted {min(start + chunk, len(todo))}/{len(todo)}", flush=True)
    order = [ids[i] for i in range(len(inputs))]
    results = _collect(client, order, poll_s, timeout_s)
    tmp = output_path.with_name(output_path.name + ".tmp")
    counts: dict[str, int] = {}
    with tmp.open("w") as out:
        for n, job_id in enumerate(order):
            st: dict[str, Any] = results.get(job_id, {"id": job_id, "status": "PENDING"})
            counts[st["status"]] = counts.get(st["status"], 0) + 1
            out.write(json.dumps({"line": n, **st}) + "\n")
    tmp.replace(output_path)
    print(f"wrote {len(order)} results to {output_path}: {counts}", flush=True)
    return counts


def _collect(client: Any, order: list[str], poll_s: float, timeout_s: float) -> dict[str, dict[str, Any]]:
    """Poll statuses (5,000 per call) until every job is final or the timeout; report progress, with why
    the first job still queued waits (its ``waitReason``: no GPU of its type, a handler that cannot load)."""
    results: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    last_report = 0.0
    while len(results) < len(order) and time.monotonic() < deadline:
        pending = [j for j in order if j not in results]
        waiting: str | None = None
        for start in range(0, len(pending), 5000):
            batch = pending[start : start + 5000]
            for job_id, st in zip(batch, client.statuses(batch), strict=True):
                if st is None:
                    results[job_id] = {"id": job_id, "status": "UNKNOWN", "error": GONE}
                elif st["status"] in FINAL_NAMES:
                    results[job_id] = st
                elif waiting is None:
                    waiting = waiting_line({**st, "id": job_id})
        if time.monotonic() - last_report > 5 or len(results) == len(order):
            last_report = time.monotonic()
            pct = 100 * len(results) // max(1, len(order))
            why = f"; job {waiting}" if waiting else ""
            print(f"done {len(results)}/{len(order)} ({pct}%){why}", flush=True)
        if len(results) < len(order):
            time.sleep(poll_s)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m orchestrator.batch", description=__doc__)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--namespace", default=os.environ.get("RIPPLE_NAMESPACE", "ripple"))
    p.add_argument("--chunk", type=int, default=1000)
    p.add_argument("--timeout-s", type=float, default=86_400.0)
    args = p.parse_args(argv)
    try:
        inputs = read_inputs(args.input)  # a bad file is said before joining Ray
        import ray

        ray.init(
            address=os.environ.get("RAY_ADDRESS", "auto"),
            namespace=args.namespace,
            logging_level=logging.WARNING,
        )
        counts = run(
            args.endpoint,
            args.input,
            args.output,
            namespace=args.namespace,
            chunk=args.chunk,
            timeout_s=args.timeout_s,
            inputs=inputs,
        )
    except RippleError as exc:  # a bad file, an unknown endpoint, a full queue: said, not a traceback
        print(f"batch: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0 if set(counts) <= {"COMPLETED"} else 2


if __name__ == "__main__":
    sys.exit(main())

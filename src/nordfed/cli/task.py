"""`nordfed task …`: create, follow and read tasks on the hub (a secure sum's result as its sum only)."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nordfed.cli.network import _client, _fail, console, err

task_app = typer.Typer(help="Create, follow and read tasks on the hub.", no_args_is_help=True)


def _run_table(task: dict[str, Any]) -> Table:
    t = Table(title=f"task {task['id']}: {task['algorithm']}@{task['version']} — {task['status']}")
    for col in ("run", "node", "status", "progress", "attempts", "log"):
        t.add_column(col)
    for r in task["runs"]:
        last = [ln for ln in (r.get("log") or "").splitlines() if ln.strip()]
        t.add_row(str(r["id"]), r.get("node_name") or str(r["node_id"]), r["status"],
                  f"{(r.get('progress') or 0) * 100:.0f}%", str(r.get("attempts", 0)), last[-1] if last else "")
    return t


def follow(client: Any, task_id: int, timeout: float) -> dict[str, Any]:
    """Wait for a task with one progress bar per node."""
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
                  TimeElapsedColumn(), console=err, transient=False) as prog:
        bars: dict[int, Any] = {}

        def update(task: dict[str, Any]) -> None:
            for r in task["runs"]:
                if r["id"] not in bars:
                    bars[r["id"]] = prog.add_task(r.get("node_name") or str(r["node_id"]), total=1.0, status="")
                prog.update(bars[r["id"]], completed=r.get("progress") or 0, status=r["status"])

        return client.wait(task_id, timeout=timeout, poll=2.0, on_update=update)


@task_app.command("create")
def task_create(
    collaboration: int = typer.Option(..., "--collaboration", "-c", help="Collaboration id."),
    algorithm: str = typer.Option(..., "--algorithm", "-a", help="Algorithm name (`nordfed algorithms`)."),
    params: str = typer.Option("{}", "--params", help="Parameters as JSON."),
    node: list[int] = typer.Option(None, "--node", "-n", help="Node id (repeatable; default: all nodes)."),
    description: str | None = typer.Option(None, "--description"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Follow progress until every node finished."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds to wait."),
    secure_sum: bool = typer.Option(False, "--secure-sum", help="Nodes mask their results so that only their "
                                    "sum can be read (`task result` prints it)."),
) -> None:
    """Create an end-to-end encrypted task (sealed per node) and optionally follow it."""
    from nordfed.client.api import HubError
    from nordfed.privacy.crypto import VerificationError

    try:
        p = json.loads(params)
    except json.JSONDecodeError as exc:
        _fail(f"--params is not valid JSON: {exc}")
    c = _client()
    try:
        task = c.create_task(collaboration, algorithm, p, node_ids=node or None, description=description,
                             secure_sum=secure_sum)
        console.print(f"task {task['id']} created")
        if wait:
            task = follow(c, task["id"], timeout)
            console.print(_run_table(task))
    except (HubError, VerificationError, KeyError, ValueError, TimeoutError) as exc:  # a changed node key too
        _fail(str(exc))
    if wait:
        _fail_unless_completed(task["id"], [(r.get("node_name") or str(r["node_id"]), r["status"])
                                            for r in task["runs"]])


def _fail_unless_completed(task_id: int, runs: list[tuple[str, str]]) -> None:
    """Exit 1 when a node refused or failed its run, so that scripts can tell (the table or results say why)."""
    bad = [f"{name} {status}" for name, status in runs if status != "completed"]
    if bad:
        _fail(f"task {task_id}: {', '.join(bad)} (`nordfed task result {task_id}` shows why)")


@task_app.command("status")
def task_status(task_id: int = typer.Argument(..., help="Task id.")) -> None:
    """Show a task's runs: status, progress, attempts and the last log line of each node."""
    from nordfed.client.api import HubError

    try:
        console.print(_run_table(_client().task(task_id)))
    except HubError as exc:
        _fail(str(exc))


@task_app.command("result")
def task_result(
    task_id: int = typer.Argument(..., help="Task id."),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
) -> None:
    """Fetch, verify (node signatures) and decrypt a task's results; of a --secure-sum task, their sum."""
    from nordfed.client.api import HubError
    from nordfed.fed import wire
    from nordfed.privacy.crypto import VerificationError
    from nordfed.privacy.secure_sum import is_masked

    try:
        rows = _client().results(task_id)
    except (HubError, VerificationError) as exc:
        _fail(str(exc))
    if any(is_masked(r.value) for r in rows):
        _print_sum(rows, as_json)
        return
    if as_json:
        data = {r.node_name: {"status": r.status, "result": r.value, "log": r.log} for r in rows}
        console.print_json(wire.encode(data).decode())
    else:
        for r in rows:
            console.rule(f"{r.node_name}: {r.status}")
            if r.status == "completed":
                console.print_json(wire.encode(r.value).decode())
            else:
                console.print(r.log, highlight=False, markup=False)
    if any(r.status != "completed" for r in rows):  # the results above say why; the exit code tells a script
        raise typer.Exit(1)


def _print_sum(rows: list[Any], as_json: bool) -> None:
    """A secure-sum task's result: the sum over its nodes (no node's own result can be read)."""
    from nordfed.client.api import FINISHED
    from nordfed.fed import wire
    from nordfed.privacy.secure_sum import SecureSumError, unmask_sum

    missing = [r for r in rows if r.status != "completed"]
    if missing:
        for r in missing:
            err.rule(f"{r.node_name}: {r.status}")
            err.print(r.log, highlight=False, markup=False)
        waiting = [r.node_name for r in missing if r.status not in FINISHED]
        _fail(f"the sum cannot be read yet: {', '.join(waiting)} {'has' if len(waiting) == 1 else 'have'} not "
              "answered (a node that is down answers when it starts again)" if waiting else
              f"the sum cannot be read: {', '.join(r.node_name for r in missing)} did not complete (every node's "
              "masked result is needed)")
    try:
        total = unmask_sum([r.value for r in rows])
    except SecureSumError as exc:
        _fail(str(exc))
    if as_json:
        console.print_json(wire.encode({"sum_over": [r.node_name for r in rows], "result": total}).decode())
        return
    if len(rows) == 1:  # what a sum over one node is: its own numbers
        err.print(f"note: a sum over one node is {rows[0].node_name}'s own result", highlight=False)
    console.rule(f"sum over {', '.join(r.node_name for r in rows)} (secure aggregation)")
    console.print_json(wire.encode(total).decode())


@task_app.command("list")
def task_list(
    collaboration: int | None = typer.Option(None, "--collaboration", "-c", help="Only this collaboration's."),
    study: int | None = typer.Option(None, "--study", help="Only this hub study's."),
    status: str | None = typer.Option(None, "--status", help="Only tasks in this status (pending, active, "
                                      "completed, failed, cancelled)."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=1000, help="The newest N."),
    as_json: bool = typer.Option(False, "--json", help="Print the hub's task records as JSON."),
) -> None:
    """List tasks you can see, newest first: algorithm, status, and how many runs finished (--json: everything)."""
    from nordfed.client.api import FINISHED, HubError

    try:
        tasks = _client().tasks(collaboration_id=collaboration, study_id=study, status=status, limit=limit)
    except HubError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(tasks, indent=2))
        return
    t = Table(title="tasks", caption="done: finished runs of all; created: MM-DD HH:MM UTC")
    for col in ("id", "algorithm", "status", "done", "study", "created"):  # fits 80 columns
        t.add_column(col, no_wrap=col != "algorithm")
    for task in tasks:
        done = sum(r["status"] in FINISHED for r in task["runs"])
        t.add_row(str(task["id"]), f"{task['algorithm']}@{task['version']}", task["status"],
                  f"{done}/{len(task['runs'])}", str(task.get("study_id") or ""),
                  str(task["created_at"])[5:16].replace("T", " "))  # MM-DD HH:MM, UTC
    console.print(t)


@task_app.command("cancel")
def task_cancel(task_id: int = typer.Argument(..., help="Task id.")) -> None:
    """Cancel a task: pending runs will not start."""
    from nordfed.client.api import HubError

    try:
        t = _client().cancel(task_id)
    except HubError as exc:
        _fail(str(exc))
    console.print(f"task {task_id}: {t.get('status', 'cancelled')}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.add_typer(task_app, name="task")

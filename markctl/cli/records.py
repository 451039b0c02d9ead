"""``markctl records``: create a registry, read it as a register, verify, checkpoint, back up, export.

Only ``records init`` creates a registry; every other command (here and in ``batch``, ``mark``,
``items``, ``tokens``, ``serve``) opens an existing one through :func:`open_store`, which refuses a
location holding none and names where the location came from (flag, environment, config, default).
Every command that writes says which registry it wrote to.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from markctl.config import load_settings
from markctl.errors import ConfigError, RecordError
from markctl.records import ItemState, NoRegistryError, RecordStore
from markctl.records import keys as site_keys
from markctl.records.register import Filters, entries, write_register
from markctl.records.store import default_key_path, sqlite_path, to_url

records_app = typer.Typer(
    help="The registry: create it, read it, verify, checkpoint, back up.", no_args_is_help=True
)

RecordsOpt = Annotated[
    str | None,
    typer.Option("--records", help="Registry URL or SQLite path (default: config, MARKCTL_RECORDS)."),
]
KeyOpt = Annotated[
    Path | None,
    typer.Option("--key", help="Site key file (default: MARKCTL_SITE_KEY, else <registry>.key)."),
]


def _source(records: str | None) -> str:
    if records:
        return "--records"
    if os.environ.get("MARKCTL_RECORDS"):
        return "MARKCTL_RECORDS"
    settings = load_settings()
    if settings.records.url:
        return f"[records] url in {settings.source or 'markctl.toml'}"
    return "the default location"


def open_store(records: str | None) -> RecordStore:
    """The configured registry (flag > MARKCTL_RECORDS > markctl.toml > default); never creates one."""
    location = load_settings().records_location(records)
    try:
        return RecordStore.open(location)
    except NoRegistryError as exc:
        raise NoRegistryError(f"{exc.message}, as given by {_source(records)}; nothing was read or written",
                              hint=exc.hint) from exc  # fmt: skip


def wrote_to(store: RecordStore) -> None:
    """Tell the person which registry a command wrote to (site and path), on stderr."""
    typer.echo(f"wrote to the {store.registry.describe()}", err=True)


def key_path(store_url: str, explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    if os.environ.get("MARKCTL_SITE_KEY"):
        return Path(os.environ["MARKCTL_SITE_KEY"])
    path = sqlite_path(store_url)
    if path is None:
        raise ConfigError("where is the site key?", hint="pass --key PATH or set MARKCTL_SITE_KEY")
    return default_key_path(path)


@records_app.command("init")
def init_cmd(
    location: Annotated[
        str | None, typer.Argument(metavar="[URL|PATH]", help="Default: the configured registry.")
    ] = None,
    site: Annotated[str, typer.Option(help="The site (depot, factory) this registry belongs to.")] = "",
    training: Annotated[
        bool, typer.Option("--training", help="A training registry: simulated machines only.")
    ] = False,
    key: KeyOpt = None,
) -> int:
    """Create a registry (and the site's signing key); the only command that creates one."""
    if not site.strip():
        raise ConfigError("a registry names its site", hint="pass --site NAME, e.g. --site 'Depot North'")
    target = load_settings().records_location(location)
    url = to_url(target)
    key_file = (
        key
        if key is not None
        else (Path(os.environ["MARKCTL_SITE_KEY"]) if os.environ.get("MARKCTL_SITE_KEY") else None)
    )
    with RecordStore.init(target, site=site, training=training, key_path=key_file) as store:
        info = store.registry
    written_key = key_path(url, key_file)
    typer.echo(f"created the {info.describe()}")
    typer.echo(f"site key: {written_key} (owner-only; keep a copy offline)")
    typer.echo(
        f"site key fingerprint: {site_keys.fingerprint(info.public_key)} (write it down: verify compares it)"
    )
    return 0


@records_app.command("list")
def list_cmd(
    records: RecordsOpt = None,
    state: Annotated[str | None, typer.Option(help="Only items in this state.")] = None,
    batch: Annotated[str | None, typer.Option(help="Only items of this batch.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> int:
    """List items and their current state."""
    if state is not None and state not in {s.value for s in ItemState}:
        raise ConfigError(f"--state {state!r}: use one of {', '.join(s.value for s in ItemState)}")
    with open_store(records) as store:
        rows = store.items(batch_id=batch, state=ItemState(state) if state else None)
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return 0
    table = Table("item", "state", "attempts", "marks", "batch", "last record", "updated")
    for r in rows:
        table.add_row(r.item_key, r.state.value, str(r.attempts), str(r.marks), r.batch_id or "", str(r.last_seq),
                      r.updated_at)  # fmt: skip
    Console().print(table)
    return 0


def _norm_key(text: str) -> str:
    # Keys are stored upper case with inner white space collapsed (manifest.weapon_key_of); the
    # component and mark profile parts are lower case.
    parts = [" ".join(p.split()) for p in text.split("|")]
    return "|".join(p.upper() if i < 2 else p.lower() for i, p in enumerate(parts))


@records_app.command("show")
def show_cmd(
    what: Annotated[str, typer.Argument(metavar="SEQ|SERIAL|MAKER|SERIAL|ITEM_KEY")],
    records: RecordsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="The full records as JSON.")] = False,
) -> int:
    """A weapon, an item or a record; keys in any case, a serial alone lists the weapons that carry it."""
    with open_store(records) as store:
        # Digits alone name a record unless some weapon carries them as its serial.
        if what.isdigit() and not store.weapons_by_serial(what):
            record = store.get(int(what))
            if record is None:
                raise ConfigError(f"no record {what} and no weapon with serial {what}")
            typer.echo(json.dumps(record.as_dict(), indent=2, sort_keys=True))
            return 0
        key = _norm_key(what)
        if key.count("|") == 0:
            candidates = store.weapons_by_serial(key)
            if not candidates:
                raise ConfigError(
                    f"no weapon with serial {what!r}", hint="weapon keys look like MAKER|SERIAL"
                )
            if len(candidates) > 1:
                typer.echo(f"{len(candidates)} weapons carry serial {key}; show one by MAKER|SERIAL:")
                for candidate in candidates:
                    typer.echo(f"  {candidate}")
                return 0
            key = candidates[0]
        if key.count("|") == 1:
            weapon = next(entries(store, Filters(weapon_key=key)), None)
            if weapon is None:
                raise ConfigError(f"no weapon {what!r}", hint="weapon keys look like MAKER|SERIAL")
            if as_json:
                out = [{**i.as_dict(), "history": [r.as_dict() for r in store.history(i.item_key)]}
                       for i in store.items(weapon_key=key)]  # fmt: skip
                typer.echo(json.dumps({"weapon": key, "site": store.registry.site, "items": out}, indent=2,
                                      sort_keys=True))  # fmt: skip
                return 0
            _print_weapon(weapon.as_dict(store.registry.site), store)
            return 0
        history = store.history(key)
        if not history:
            raise ConfigError(f"no item {what!r}", hint="item keys look like MAKER|SERIAL|component|profile")
        typer.echo(json.dumps([r.as_dict() for r in history], indent=2, sort_keys=True))
    return 0


def _print_weapon(weapon: dict[str, Any], store: RecordStore) -> None:
    from markctl.records.images import image_root

    ident = ", ".join(f"{k} {v}" for k, v in sorted(weapon["identity"].items()))
    typer.echo(f"{weapon['weapon']}  ({ident or 'no identity recorded'}), site {weapon['site']}")
    root = image_root(store)
    for m in weapon["marks"]:
        typer.echo(f"  {m['component']} / {m['mark_profile']}: {m['state']}")
        if m.get("exemption") is not None:
            _print_exemption(m)
            continue
        text = " / ".join(f"{k}: {v}" for k, v in sorted(m["fields"].items()))
        typer.echo(f"    mark text:    {text or '-'}")
        typer.echo(f"    marked:       {m['marked_at'] or '-'} by {m['operator'] or '-'}")
        typer.echo(f"    machine:      {m['machine'] or '-'}{' (SIMULATED)' if m['simulated'] else ''}")
        typer.echo(f"    verification: {m['verification'] or 'not verified'}")
        image = m["image"]
        shown = str(root / image) if image and root is not None and not Path(image).is_absolute() else image
        typer.echo(f"    image:        {shown or '-'}")
        typer.echo(f"    record:       {m['record'] or '-'} (batch {m['batch'] or '-'})")


def _print_exemption(m: dict[str, Any]) -> None:
    """An exempt item: no mark, no machine; the exemption's facts and, if due, the warning."""
    ex = m["exemption"]
    typer.echo("    NOT MARKED:   exempt from the mark (ITI 8(b) temporary import)")
    typer.echo(f"    purpose:      {ex.get('purpose')}")
    typer.echo(f"    re-export by: {ex.get('re_export_by')}")
    typer.echo(f"    supervisor:   {ex.get('recorded_by')}")
    typer.echo(f"    reference:    {ex.get('reference') or '-'}")
    typer.echo(f"    recorded:     {m['marked_at'] or '-'} by {m['operator'] or '-'}")
    typer.echo(f"    record:       {m['record'] or '-'} (batch {m['batch'] or '-'})")
    if m.get("re_export_overdue"):
        typer.echo(
            f"markctl: warning: {m['item_key']}: its re-export date {ex.get('re_export_by')} has passed and it "
            "is still recorded exempt: check that the weapon left, or end the exemption and mark it",
            err=True,
        )


@records_app.command("verify")
def verify_cmd(
    records: RecordsOpt = None,
    expect_head: Annotated[
        str | None,
        typer.Option(
            help="A head kept outside: the hash, or the paper code SEQ:PREFIX; any earlier head passes."
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="An exported checkpoint file (records checkpoint -o).")
    ] = None,
    archive: Annotated[
        Path | None, typer.Option("--archive", help="Verify this backup file instead.")
    ] = None,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="SQLite quick_check instead of integrity_check (no index comparison)."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> int:
    """Recompute the hash chain and every signed checkpoint; exit 1 naming every problem."""
    public_key = None
    if checkpoint is not None:
        exported = _read_checkpoint(checkpoint)
        expect_head = expect_head or f"{exported['seq']}:{exported['hash']}"
        public_key = str(exported["public_key"])
        if not site_keys.signature_ok(public_key, str(exported["site"]), int(exported["seq"]), str(exported["hash"]),
                                      str(exported["signature"])):  # fmt: skip
            raise RecordError(f"{checkpoint}: the checkpoint's signature does not match its content")
    if archive is not None:
        if not archive.is_file():
            raise ConfigError(f"--archive {archive}: no such file")
        store = RecordStore.open(archive, read_only=True)  # an archive is checked, never written
    else:
        store = open_store(records)
    with store:
        report = store.verify(expect_head=expect_head, public_key=public_key, deep=not quick)
        info = store.registry
    if as_json:
        typer.echo(json.dumps({**report.as_dict(), "site": info.site, "training": info.training,
                               "registry": info.where}, indent=2))  # fmt: skip
    else:
        for problem in report.problems:
            typer.echo(f"TAMPERED: {problem}", err=True)
        for warning in report.warnings:  # an auditor's lead, not damage: the exit code stays
            typer.echo(f"warning: {warning}", err=True)
        verdict = "intact" if report.ok else f"NOT intact ({len(report.problems)} problem(s))"
        cps = f"{report.checkpoints} signed checkpoint(s)" if report.checkpoints else "no checkpoint yet"
        typer.echo(f"records {verdict}: {report.rows} rows, head {report.head_seq} {report.head_hash}; {cps}")
        typer.echo(f"({info.describe()})")
    return 0 if report.ok else 1


def _read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
        if data.get("format") != "markctl-checkpoint/1":
            raise ValueError("not a markctl checkpoint")
        for name in ("site", "seq", "hash", "signature", "public_key"):
            if name not in data:
                raise ValueError(f"no {name!r}")
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError(f"--checkpoint {path}: {exc}") from exc
    return dict(data)


@records_app.command("checkpoint")
def checkpoint_cmd(
    records: RecordsOpt = None,
    key: KeyOpt = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Also write it to this file (JSON).")
    ] = None,
    actor: Annotated[str, typer.Option(help="Who takes the checkpoint (recorded).")] = "markctl",
) -> int:
    """Sign the chain head with the site key; record it in the chain; print its paper code."""
    with open_store(records) as store:
        site_key = site_keys.load_key(key_path(store.url, key))
        cp = store.checkpoint(site_key, actor)
        wrote_to(store)
    if output is not None:
        output.write_text(json.dumps(cp.as_dict(), indent=2) + "\n", encoding="utf-8")
        typer.echo(f"checkpoint written to {output}", err=True)
    typer.echo(f"checkpoint {cp.record_seq} signs head {cp.seq} {cp.hash}")
    typer.echo(f"paper code: {cp.paper_code}  (key {site_keys.fingerprint(cp.public_key)})")
    return 0


@records_app.command("register")
def register_cmd(
    records: RecordsOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv, xlsx or pdf.")] = "table",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (xlsx/pdf need one).")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Marked on or after (YYYY-MM-DD).")] = None,
    until: Annotated[str | None, typer.Option(help="Marked on or before (YYYY-MM-DD).")] = None,
    batch: Annotated[str | None, typer.Option(help="Only this batch.")] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="Only this mark profile.")] = None,
    state: Annotated[str | None, typer.Option(help="Only items in this state.")] = None,
) -> int:
    """The bound book: one entry per weapon with every component's marks."""
    if fmt not in ("table", "csv", "xlsx", "pdf"):
        raise ConfigError(f"--format {fmt!r}: use table, csv, xlsx or pdf")
    if fmt in ("xlsx", "pdf") and output is None:
        raise ConfigError(f"--format {fmt} writes a file", hint=f"pass --output register.{fmt}")
    if state is not None and state not in {s.value for s in ItemState}:
        raise ConfigError(f"--state {state!r}: use one of {', '.join(s.value for s in ItemState)}")
    filters = Filters(since, until, batch, profile, ItemState(state) if state else None)
    with open_store(records) as store:
        count = write_register(store, fmt, output if output is not None else sys.stdout, filters)
    typer.echo(f"{count} weapon(s) in the register" + (f", written to {output}" if output else ""), err=True)
    return 0


@records_app.command("backup")
def backup_cmd(
    dest: Annotated[Path, typer.Argument(help="The backup file to create (never overwritten).")],
    records: RecordsOpt = None,
    key: KeyOpt = None,
) -> int:
    """An online copy of the registry with a fresh signed checkpoint; the copy is verified before success."""
    with open_store(records) as store:
        checkpoint = None
        try:
            site_key = site_keys.load_key(key_path(store.url, key))
        except RecordError as exc:
            typer.echo(f"markctl: no checkpoint in this backup: {exc}", err=True)
        else:
            checkpoint = store.checkpoint(site_key, "markctl:backup")
            wrote_to(store)
        store.backup(dest)
    if checkpoint is not None:
        dest.with_name(dest.name + ".checkpoint.json").write_text(
            json.dumps(checkpoint.as_dict(), indent=2) + "\n"
        )
    with RecordStore.open(dest, read_only=True) as copy:
        report = copy.verify(
            expect_head=f"{checkpoint.seq}:{checkpoint.hash}" if checkpoint is not None else None,
            public_key=checkpoint.public_key if checkpoint is not None else None,
        )
    if not report.ok:
        raise RecordError(
            f"the backup {dest} does not verify: {report.problems[0]}", hint="keep the original"
        )
    typer.echo(f"backup {dest}: {report.rows} rows, verified" + (
        f"; checkpoint {checkpoint.paper_code} in {dest.name}.checkpoint.json" if checkpoint else ""))  # fmt: skip
    return 0


@records_app.command("export")
def export_cmd(
    records: RecordsOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="json or csv.")] = "json",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
) -> int:
    """Export every record for the national register (JSON or CSV)."""
    if fmt not in ("json", "csv"):
        raise ConfigError(f"--format {fmt!r}: use json or csv")
    with open_store(records) as store:
        if output is None:
            count = store.export(sys.stdout, fmt)
        else:
            with output.open("w", encoding="utf-8", newline="") as out:
                count = store.export(out, fmt)
    typer.echo(f"exported {count} records", err=True)
    return 0


def register(app: typer.Typer) -> None:
    app.add_typer(records_app, name="records")

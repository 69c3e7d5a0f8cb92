"""Key and backup commands: `lifecycle keys rotate`, `lifecycle backup DIR`,
`lifecycle restore DIR`, and the key lines of `lifecycle status`.

Registered on the main group in `lifecycle.cli.main` (`register(cli)`). The shared helpers are
imported from `lifecycle.cli.main` when a command runs, as in `lifecycle.cli.auditor`.
Exit codes: 0 ok, 1 refused (a rotation running elsewhere, a store not empty), 2 usage or
configuration error.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from lifecycle.store.vault import KeyVault
from lifecycle.support.logs import get_logger
from lifecycle.services.rotation import epoch_status

log = get_logger("lifecycle.keys")


def key_status(vault: KeyVault, now: datetime) -> dict[str, Any]:
    """The epoch lines of `status`: the current epoch and its age, erasures not yet final
    in copies, the newest backup and whether it predates the current epoch."""
    document = epoch_status(vault, now)
    newest = vault.newest_backup()
    document["newest_backup"] = None if newest is None else {
        "taken_at": newest[0].isoformat(), "epoch": newest[1], "place": newest[2]}
    document["backup_predates_epoch"] = newest is not None and newest[1] < document["epoch"]
    return document


def render_key_status(keys: dict[str, Any]) -> list[str]:
    lines = [f"master key: epoch {keys['epoch']} (fingerprint {keys['fingerprint']}) since "
             f"{keys['since'] or 'first use'}"
             + (f", {keys['age_days']} days" if keys["age_days"] is not None else "")
             + ("; a rotation is under way (run `lifecycle keys rotate` to finish it)"
                if keys["rotation_under_way"] else "")]
    if keys["unsealed_erasures"]:
        lines.append(f"erasures not yet final in backups: {keys['unsealed_erasures']} "
                     f"destroyed keys, the oldest erased at {keys['oldest_unsealed_erasure']} "
                     "(final once the next key rotation completes)")
    else:
        lines.append("erasures not yet final in backups: none")
    backup = keys["newest_backup"]
    if backup is None:
        lines.append("backups: none taken with `lifecycle backup`")
    elif keys["backup_predates_epoch"]:
        lines.append(f"warning: the newest backup ({backup['place']}, {backup['taken_at']}) "
                     f"is from epoch {backup['epoch']}, before the current epoch "
                     f"{keys['epoch']}: restored, it opens no personal value; take a new "
                     "backup")
    else:
        lines.append(f"newest backup: {backup['place']} at {backup['taken_at']} "
                     f"(epoch {backup['epoch']})")
    return lines


@click.group()
def keys() -> None:
    """The master key: epochs and rotation."""


@keys.command("rotate")
@click.option("--batch", type=click.IntRange(1, 1_000_000), default=20_000, show_default=True,
              help="Data keys re-wrapped per transaction.")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Batches re-wrapped at once, each in its own transaction [default: 1, "
                   "which on PostgreSQL stores two while it reads the next and, while "
                   "other processes write, pauses between batches; more make no room for "
                   "ingest running beside them].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def keys_rotate(batch: int, workers: int | None, as_json: bool) -> None:
    """Start a new master-key epoch, re-wrap every live data key under it, record the
    rotation and destroy the old epoch's key (finishes an interrupted rotation first)."""
    from lifecycle.cli.main import emit_json, open_ledger, utc_now
    from lifecycle.services.rotation import rotate

    with open_ledger() as ledger:
        report = rotate(ledger.settings, ledger.vault, ledger.store, utc_now(), ledger.actor,
                        batch, workers)
        key_file = ledger.settings.master_key_file
    log.info("keys.rotated", old_epoch=report.old_epoch, new_epoch=report.new_epoch,
             rewrapped=report.rewrapped, resumed=report.resumed, by=report.by)
    if as_json:
        emit_json({**report.as_dict(), "key_file": str(key_file)})
        return
    verb = "finished the rotation" if report.resumed else "rotated"
    click.echo(f"{verb}: epoch {report.old_epoch} ({report.old_fingerprint}) -> epoch "
               f"{report.new_epoch} ({report.new_fingerprint}); {report.rewrapped} live keys "
               f"re-wrapped, {report.live_keys} live under the new epoch")
    click.echo(f"the new key is in {key_file}; the old epoch's key is destroyed there"
               + ("" if report.destroyed else " (by an earlier run)"))
    if report.operator_key:
        click.echo(f"the old key you supply in {report.operator_key} is the key of retired "
                   f"epoch {report.old_epoch} (fingerprint {report.old_fingerprint}): retire "
                   f"it (unset {report.operator_key}, delete the key wherever you keep it); "
                   f"lifecycle now opens with the key in {key_file}")


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def backup(directory: Path, as_json: bool) -> None:
    """Write a consistent copy of the store (no master key) to DIRECTORY (new or empty)."""
    from lifecycle.services.backup import take_backup
    from lifecycle.cli.main import _or_exit, emit_json, open_ledger, utc_now, writing

    with open_ledger() as ledger:  # checks the key and brings the schema up to date
        settings = ledger.settings
    _backup_directory(directory)
    with writing(directory, "backup"):
        report = _or_exit(lambda: take_backup(settings, directory, utc_now()))
    log.info("backup.taken", epoch=report.epoch, backend=report.backend)
    if as_json:
        emit_json(report.as_dict())
        return
    click.echo(f"backup written to {directory} ({', '.join(report.files)}), epoch "
               f"{report.epoch}; it holds no master key and opens only while epoch "
               f"{report.epoch} is live")


def _backup_directory(directory: Path) -> None:
    """Exits 2 with one line naming the directory unless it is new or empty and can be
    created and written (an output path, as `--out` is)."""
    from lifecycle.cli.main import output_refused

    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        output_refused("backup", directory, "must be a new or empty directory")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        output_refused("backup", directory, f"cannot be created ({error.strerror or error})")
    if not os.access(directory, os.W_OK | os.X_OK):
        output_refused("backup", directory, "is not writable")


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def restore(directory: Path, as_json: bool) -> None:
    """Restore the backup in DIRECTORY into an empty store."""
    from lifecycle.services.backup import restore_backup
    from lifecycle.cli.main import EXIT_USAGE, _or_exit, emit_json, utc_now
    from lifecycle.domain.errors import ConfigurationError
    from lifecycle.store.settings import load_settings

    try:
        settings = load_settings()
    except ConfigurationError as error:
        click.echo(f"lifecycle: configuration error: {error}", err=True)
        raise SystemExit(EXIT_USAGE) from None
    report = _or_exit(lambda: restore_backup(settings, directory, utc_now()))
    log.info("backup.restored", epoch=report.epoch, values_open=report.opens)
    if as_json:
        emit_json(report.as_dict())
        return
    click.echo(f"restored {directory} (epoch {report.epoch})")
    if report.opens:
        click.echo("the master key given is the key of the backup's epoch: every value "
                   "that was live when it was taken opens")
    elif report.adopted_epoch is not None:
        click.echo(f"the backup's epoch {report.epoch} is retired: its log and structure are "
                   f"restored, and no personal value in it opens (they read as erased); the "
                   f"key given is now epoch {report.adopted_epoch}")
    else:
        click.echo("no master key given: the store opens only with the key of the "
                   "backup's epoch")


def register(group: click.Group) -> None:
    for command in (keys, backup, restore):
        group.add_command(command)

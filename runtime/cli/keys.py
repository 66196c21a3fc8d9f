"""`pat keys`: Ed25519 keys that sign deployable artifacts, and the trusted-keys lists of edge nodes.

    pat keys create                       # $PAT_HOME/signing.key (0600) + signing.pub, trusted on this machine
    pat keys show                         # print the public key (copy it to each edge's trusted-keys file)
    pat keys trust 'ed25519:...' --file /etc/pat/trusted_keys   # on an edge machine
    pat keys sign runs/<run>/model.pnn    # (re-)sign an artifact in place with your key

``$PAT_HOME`` defaults to ``~/.config/pat``. Private keys are never written into a run folder or an artifact.
See docs/artifacts.md (signing, trust, key rotation).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the `keys` command group to `app`."""
    keys = typer.Typer(no_args_is_help=True, help="Ed25519 keys that sign artifacts; trusted keys of edges.")
    app.add_typer(keys, name="keys")

    @keys.command("create")
    def create(
        directory: Optional[Path] = typer.Option(None, "--dir", help="key folder (default $PAT_HOME or "
                                                                     "~/.config/pat)"),
        comment: str = typer.Option("", help="comment stored with the public key (e.g. your name)"),
        force: bool = typer.Option(False, "--force", help="replace an existing key"),
        trust: bool = typer.Option(True, "--trust/--no-trust", help="also add the public key to that folder's "
                                                                    "trusted_keys (edges on this machine)"),
    ) -> None:
        """Create a signing key pair; print the public key."""
        from pat_runtime.signing import KeyFileError, generate_key

        try:
            key_path, pub_path, key = generate_key(directory, comment=comment, force=force, trust=trust)
        except KeyFileError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"private key {key_path} (mode 0600: keep it secret, never copy it into runs or artifacts)")
        typer.echo(f"public key  {pub_path}:")
        typer.echo(pub_path.read_text().strip())
        if trust:
            typer.echo(f"trusted on this machine via {key_path.parent / 'trusted_keys'}; on other edges run "
                       f"`pat keys trust '{key.public_text}' --file FILE` and start `pat edge --trusted-keys FILE`")

    @keys.command("show")
    def show(key: Optional[Path] = typer.Option(None, "--key", help="private key (default $PAT_HOME/signing.key)")
             ) -> None:
        """Print the public key of a signing key."""
        from pat_runtime.signing import KeyFileError, load_signing_key

        try:
            k = load_signing_key(key)
        except KeyFileError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"{k.public_text} pat key {k.key_id}")

    @keys.command("trust")
    def trust_cmd(
        public_key: str = typer.Argument(..., help="'ed25519:BASE64' or a .pub / trusted-keys file"),
        file: Optional[Path] = typer.Option(None, "--file", help="trusted-keys file (default "
                                                                 "$PAT_HOME/trusted_keys)"),
    ) -> None:
        """Add a public key to a trusted-keys file (what `pat edge --trusted-keys` reads)."""
        from pat_runtime.signing import KeyFileError, TrustedKeys, add_trusted, default_trust_path, key_id

        target = file or default_trust_path()
        try:
            src = Path(public_key)
            keys = (TrustedKeys.from_file(src).keys if not public_key.startswith("ed25519:") and src.is_file()
                    else TrustedKeys.from_lines([public_key]).keys)
        except KeyFileError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        if not keys:
            typer.echo(f"error: no public key in {public_key!r}", err=True)
            raise typer.Exit(2)
        for raw in sorted(keys):
            added = add_trusted(target, raw, f"pat key {key_id(raw)}")
            typer.echo(f"{'trusted' if added else 'already trusted'}: key {key_id(raw)} in {target}")

    @keys.command("sign")
    def sign(
        model: Path = typer.Argument(..., help="the .pnn artifact (signed in place)"),
        key: Optional[Path] = typer.Option(None, "--key", help="private key (default $PAT_HOME/signing.key)"),
        out: Optional[Path] = typer.Option(None, "--out", help="write the signed artifact here instead"),
    ) -> None:
        """Sign (or re-sign, e.g. after a key rotation) an artifact; its artifact id does not change."""
        from pat_runtime.artifact import ArtifactError, atomic_write, loads, sign_artifact
        from pat_runtime.signing import KeyFileError, load_signing_key

        try:
            k = load_signing_key(key)
            data = sign_artifact(model.read_bytes(), k)
        except (KeyFileError, ArtifactError, OSError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        dest = out or model
        atomic_write(dest, data)
        typer.echo(f"{dest}: artifact {loads(data).artifact_id[:12]} signed by key {k.key_id}")

"""Text a command writes for a person (a draft config, an example): to a new file, never
over an existing one unless asked, or to standard output."""

from __future__ import annotations

import sys
from pathlib import Path

from edgewarden.gateway.errors import GatewayError


def write_text_out(text: str, out: Path | None, *, force: bool) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    try:
        with open(out, "w" if force else "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise GatewayError(f"{out} exists: choose another --out, or --force to overwrite it") from None
    except OSError as e:
        raise GatewayError(f"cannot write {out}: {e.strerror or e}") from None

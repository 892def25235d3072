"""Write the settings reference of the docs site from the code: python tools/reference.py [--out PATH]."""
import argparse
from pathlib import Path

from detkit.engine.reference import settings_reference

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "reference" / "settings.md"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split(":")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where to write it (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    args.out.write_text(settings_reference())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

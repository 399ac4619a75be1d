"""`python -m ufinebench ...` is the same as the `ufinebench` console script."""

from ufinebench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

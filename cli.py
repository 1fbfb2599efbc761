"""Entry point of the pipeline: `python cli.py <stage> [--params params.yaml]`."""

from kalm.cli import app

if __name__ == "__main__":
    app()

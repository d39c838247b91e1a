"""``python -m gptf``: the same command line as ``gptf`` (``torchrun ... -m gptf run`` needs it)."""

from gptf.cli import main

if __name__ == "__main__":
    main()

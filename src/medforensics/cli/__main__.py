"""``python -m medforensics.cli``: the command line."""

from medforensics.cli import main

if __name__ == "__main__":
    main()

"""`python -m aapo ...` (and `accelerate launch -m aapo train ...`) runs the command line."""

from aapo.cli import main

if __name__ == "__main__":
    main()

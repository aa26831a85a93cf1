"""`python -m mtrain ...`: the form torchrun launches (`torchrun ... -m mtrain train ...`)."""

from mtrain.cli import main

if __name__ == "__main__":
    main()

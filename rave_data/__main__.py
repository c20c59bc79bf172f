"""``python -m rave_data``: the same as the ``ravedata`` command."""
from rave_data.cli import main

if __name__ == "__main__":
    main()

from rave_data.cli import main

main()

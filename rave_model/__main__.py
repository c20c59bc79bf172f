from rave_model.cli import main

main()

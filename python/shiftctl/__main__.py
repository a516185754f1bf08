from shiftctl.cli import main

main()

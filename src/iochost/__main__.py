from iochost.cli import main

main()

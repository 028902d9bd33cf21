from iochost.worker.main import main

main()

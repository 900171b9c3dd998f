from smartroute.cli.main import main

main()
